"""Analysis commands: what a model learned (`modkit probe`) and what training it cost (`modkit cost`)."""

"""Hugging Face conversion: transformers checkpoints in and out (``convert``), the declarative
weight-name tables a checkpoint format is written as (``weight_table``), and PEFT / AdapterHub
folders (``peft_folders``). Plugins import these modules by their full names."""

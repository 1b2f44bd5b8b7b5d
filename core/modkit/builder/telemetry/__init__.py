"""What a build reports while and after it trains: the metrics log and MFU (against the
measured matmul peak), the progress line, CPU/memory use and the loss curves."""

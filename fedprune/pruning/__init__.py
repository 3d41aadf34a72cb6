"""Pruning: masks (`masks`), sparsity schedules (`schedules`), the channel graph of
structured pruning (`channels`) and the methods (`methods`), each method one file."""

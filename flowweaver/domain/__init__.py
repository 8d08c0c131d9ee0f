"""The pure core: workflow specs, the DAG, run events and the fold. No I/O, threads or clock."""

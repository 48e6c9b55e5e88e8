"""What the `attnzoo` command offers beyond training and analysis: `info` (params, MACs, layout),
`bench` (throughput and memory) and `compare` (one recipe, many models and seeds). These sit
above `engine` and `analysis` and use both; the MAC counter they share stays in `engine.flops`
because every training run's summary reports MACs too.
"""

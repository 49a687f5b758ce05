"""`mnet-compile pareto`: which alpha and resolution give the best accuracy within a latency budget on a target.

accuracy.py joins each configuration with its published ImageNet accuracy (tables/imagenet_accuracy.json),
timing.py builds and times the configurations (locally like the benchmark, or on a board through RPC) and
caches the results, predict.py estimates latencies from a few measured ones, front.py finds the Pareto front
and the configuration for a budget, plot.py draws it, sweep.py ties them together for the CLI.
"""

# The paper's 16 configurations: alpha {1.0, 0.75, 0.5, 0.25} x resolution {224, 192, 160, 128} (Figures 4, 5).
PAPER_CONFIGS = [(alpha, resolution) for alpha in (1.0, 0.75, 0.5, 0.25) for resolution in (224, 192, 160, 128)]


def config_name(alpha: float, resolution: int) -> str:
    return f"{alpha}-{resolution}"

"""Kernel schedules: the tunable kernels, custom rules, default schedules or tuned records, and tuning."""

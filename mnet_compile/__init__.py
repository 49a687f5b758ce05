"""mnet-compile: MobileNet -> native code through Apache TVM (Relax + MetaSchedule)."""

__version__ = "0.1.0"

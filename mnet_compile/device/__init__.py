"""The device side: the standalone loader (runtime.py), the bundle to copy over, the runtime kit and C++ runner."""

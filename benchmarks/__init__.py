"""tinycc benchmarks: ``python -m benchmarks NAME --data DIR --out DIR``."""

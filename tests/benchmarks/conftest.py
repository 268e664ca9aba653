"""The benchmark smoke tests have their own marker: ``pytest -m bench_smoke`` runs just them."""


def pytest_configure(config):
    config.addinivalue_line("markers", "bench_smoke: runs a benchmark script with --quick (tiny sizes) to keep it runnable")

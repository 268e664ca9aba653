import subprocess
import sys

import tunedeck


def test_import_tunedeck_stays_light():
    code = ("import sys, tunedeck; from tunedeck import foundation_model as fm; "
            "print(' '.join(m for m in ('torch', 'transformers', 'trl', 'mlflow', 'fastapi', 'uvicorn') if m in sys.modules))")
    heavy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert heavy == ""


def test_public_names_are_exported():
    for name in tunedeck.__all__:
        assert hasattr(tunedeck, name), name
    for name in tunedeck.foundation_model.__all__:
        assert callable(getattr(tunedeck.foundation_model, name)), name

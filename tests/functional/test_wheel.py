"""``pip install .`` gives a working server: the wheel carries the pages and the migrations."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import requests

from tests.functional.test_cli_and_demo import free_port

ROOT = Path(__file__).resolve().parents[2]


def run(*args, **kwargs):
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=600, **kwargs)


def test_the_wheel_migrates_and_serves_pages(tmp_path):
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT))
    (wheel,) = dist.glob("practitioner_idp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "idp/bundled/templates/login.html" in names
    assert "idp/bundled/migrations/env.py" in names
    assert any(n.startswith("idp/bundled/migrations/versions/0001") for n in names)
    assert "idp/translations/fr/LC_MESSAGES/messages.mo" in names
    assert not [n for n in names if "screenshots" in n or n.endswith(".png")]  # README only

    # A fresh environment: the wheel itself, its dependencies from this one (no download).
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    python = venv / "bin" / "python"
    site = run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    Path(site.stdout.strip(), "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel))

    instance = tmp_path / "instance"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.update(
        IDP_ENV="production",
        IDP_SECRET_KEY="k" * 64,
        IDP_DATA_KEY="d" * 64,
        IDP_ISSUER=f"http://localhost:{port}",
        IDP_INSTANCE_PATH=str(instance),
    )
    where = run(str(python), "-c", "import idp; print(idp.__file__)", env=env, cwd=tmp_path)
    assert where.stdout.startswith(str(venv)), where.stdout  # the wheel, not this checkout
    idp = str(venv / "bin" / "idp")
    assert "up to date" in run(idp, "db", "upgrade", env=env, cwd=tmp_path).stdout
    server = subprocess.Popen(
        [idp, "serve", "--port", str(port), "--workers", "1"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        page = None
        for _ in range(200):
            try:
                page = requests.get(f"http://127.0.0.1:{port}/login", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert page is not None and page.status_code == 200
        assert 'autocomplete="username webauthn"' in page.text
        assert "Se connecter" in page.text  # the French catalogue came along
    finally:
        server.terminate()
        server.wait(timeout=10)

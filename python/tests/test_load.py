"""Loading: no LD_PRELOAD needed; a missing library is a clear ImportError."""
import os
import subprocess
import sys

import pagedkv

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.join(HERE, "..")


def run(code, **env):
    e = dict(os.environ)
    e.pop("LD_PRELOAD", None)
    e["PYTHONPATH"] = PKG
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], env=e,
                          capture_output=True, text=True, timeout=60)


def test_loads_without_preload():
    r = run("import pagedkv; c = pagedkv.Cache(n_layers=1, n_kv_heads=1, "
            "head_dim=4, block_size=4, num_blocks=4); print(c.num_blocks)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "4"


def test_missing_library_is_an_import_error():
    r = run("import pagedkv", PAGEDKV_LIB="/nonexistent/libpagedkv.so")
    assert r.returncode != 0
    assert "cannot load libpagedkv" in r.stderr
    assert "/nonexistent/libpagedkv.so" in r.stderr


def test_library_path_and_version():
    assert os.path.exists(pagedkv.LIBRARY_PATH) or "/" not in pagedkv.LIBRARY_PATH
    assert pagedkv.version().count(".") == 2


def test_loading_twice_is_harmless():
    import ctypes
    import importlib
    again = ctypes.CDLL(pagedkv.LIBRARY_PATH)
    assert again.pkv_strerror
    importlib.reload(pagedkv)
    with pagedkv.Cache(n_layers=1, n_kv_heads=1, head_dim=4, block_size=4,
                       num_blocks=4) as c:
        c.check()


def test_make_install_installs_the_package(tmp_path):
    """`make install PREFIX=dir` puts the package where python3 finds it
    with PYTHONPATH=dir/lib/python3/dist-packages, loading dir's library
    (no PAGEDKV_LIB, run from outside the tree)."""
    root = os.path.normpath(os.path.join(HERE, "..", ".."))
    prefix = tmp_path / "prefix"
    mode = os.environ.get("PAGEDKV_MODE", "release")
    r = subprocess.run(["make", "-s", "-C", root, "install", "MODE=" + mode,
                        "PREFIX=%s" % prefix], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    e = {k: v for k, v in os.environ.items()
         if k not in ("PAGEDKV_LIB", "LD_PRELOAD", "PYTHONPATH")}
    e["PYTHONPATH"] = str(prefix / "lib" / "python3" / "dist-packages")
    r = subprocess.run([sys.executable, "-c",
                        "import pagedkv; print(pagedkv.__file__); "
                        "print(pagedkv.LIBRARY_PATH); "
                        "c = pagedkv.Cache(n_layers=1, n_kv_heads=1, head_dim=4,"
                        " block_size=4, num_blocks=4); c.check()"],
                       env=e, cwd=str(tmp_path), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    pkg, lib = r.stdout.split()
    assert pkg.startswith(str(prefix)) and lib.startswith(str(prefix))

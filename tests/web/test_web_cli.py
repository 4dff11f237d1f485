"""``memstore ui`` as a user runs it: prints the URL with the token, serves, stops cleanly on
Ctrl-C; refuses a non-loopback host without --allow-remote; says how to get the ui extra."""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from memstore.cli import cli


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def test_ui_prints_the_url_serves_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "memstore", "ui", "--no-browser"], cwd=tmp_path, env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        found = re.fullmatch(r"memstore ui: (http://127\.0\.0\.1:(\d+)/\?token=([\w-]+))\n", line)
        assert found, line
        url = found.group(1)
        try:
            urllib.request.urlopen(url.split("?")[0], timeout=30)
            raise AssertionError("served without the token")
        except urllib.error.HTTPError as exc:
            assert exc.code == 403
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with browser.open(url, timeout=30) as response:  # redirect, cookie, page
            assert response.status == 200
            assert b"memstore" in response.read()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "stopped" in err


def test_non_loopback_host_needs_allow_remote() -> None:
    result = CliRunner().invoke(cli, ["ui", "--host", "0.0.0.0", "--no-browser"])
    assert result.exit_code == 2
    assert "--allow-remote" in result.output


def test_taken_port_is_a_one_line_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["ui", "--port", str(port), "--no-browser"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: cannot listen on 127.0.0.1:")
    assert len(result.output.strip().splitlines()) == 1


def test_missing_ui_extra_says_how_to_get_it(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['starlette'] = None\n"
            "from memstore.cli import cli\n"
            "cli(['ui', '--no-browser'])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1
    assert "pip install 'memstore[ui]'" in proc.stderr
    assert "Traceback" not in proc.stderr

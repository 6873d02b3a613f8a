"""The ten attacks of issue 23 replayed against a real `marsvision serve` on 127.0.0.1, on SQLite and
PostgreSQL, each bounded in requests, bytes and time:

    . .venv/bin/activate && python benchmarks/abuse.py          # about 3-5 minutes on 2 cores

The archive: ``--rows`` rows (default 3,000: the indexer's rows of examples/images, then synthetic copies,
built as benchmarks/serve.py builds its archive), plus ``--planted`` copies of example images indexed in a
folder of their own (they get swapped for links and rewritten by the /file attack). The server runs with
a write token (``--token-file``) and ``--body-timeout`` 8 s (default 30 s: shorter here to keep the run
short; the limit is what is tested).

Throughout, a watcher thread asks ``/readyz`` and a plain search every 0.1 s (plus their own time) and
writes a correction every 20th round; per attack: the answers, whether /readyz stayed 200, the search p95
against the quiet p95 measured first, and the server's peak RSS (VmRSS sampled every 50 ms). At the end,
every acknowledged correction is looked up in the database, and the targets of the issue are checked.

Writes benchmarks/results/abuse.json and abuse.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve  # noqa: E402  (benchmarks/serve.py: archive building, the server process, PostgreSQL)
from common import write_results  # noqa: E402
from sqlalchemy import create_engine, func, text  # noqa: E402
from sqlalchemy import select as sql_select

from marsvision.archive.db import Correction, Image, ModelVersion, open_engine, sessions  # noqa: E402
from marsvision.archive.index import IndexConfig, run_index  # noqa: E402
from marsvision.archive.versions import active_version, register  # noqa: E402
from marsvision.model_file import bundled_model_path  # noqa: E402

REPO = serve.REPO
EXAMPLES = sorted((REPO / "examples" / "images").glob("*.JPG"))
TOKEN = "abuse-bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RSS_MB, P95_FACTOR = 400.0, 3.0


class AbuseServer(serve.Server):
    """serve.Server with a token file and the limits given (its own command line)."""

    def __init__(self, db_url: str, workdir: Path, extra: list[str]):
        (workdir / "token").write_text(TOKEN + "\n")
        self.port = serve.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"serve-{self.port}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.cmd = [sys.executable, "-m", "marsvision.cli", "serve", "--db", db_url, "--host", "127.0.0.1"]
        self.cmd += ["--port", str(self.port), "--token-file", str(workdir / "token"), *extra]
        env = {**os.environ, "PYTHONPATH": str(REPO), "MARSVISION_UPLOADS": str(workdir / "uploads")}
        env.pop("MARSVISION_TOKEN", None)
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, cwd=workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.sampled_peak_kb = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()


# ---------------------------------------------------------------------------------------------- raw HTTP


def raw_request(port: int, head: str, chunks=(), pace: float = 0.0, timeout: float = 60.0) -> tuple[int, int]:
    """Send ``head`` then ``chunks`` (each after ``pace`` s) until the server answers or closes; returns
    (status or 0, body bytes sent). The client never holds more than one chunk."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.encode("latin-1"))
        select.select([s], [], [], 1.0)  # a server that refuses on the headers answers now
        for chunk in chunks:
            if select.select([s], [], [], pace)[0]:
                break  # the server answered (or closed) before the body was all sent
            try:
                s.sendall(chunk)
            except OSError:
                break
            sent += len(chunk)
        try:
            first = s.recv(64)
        except OSError:
            return 0, sent
    parts = first.split(b" ", 2)
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), sent


def mb_chunks(total: int, size: int = 1 << 20):
    block = b"\0" * size
    for _ in range(total // size):
        yield block


def multipart(files: list[tuple[str, bytes]], boundary: str = "abusebnd") -> tuple[bytes, str]:
    body = b""
    for name, data in files:
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'.encode()
        body += b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def head(method: str, path: str, length: int | None, ctype: str = "application/octet-stream", extra: str = "") -> str:
    size = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n{size}{extra}\r\n"


# ------------------------------------------------------------------------------------------------ watcher


class Watcher:
    """/readyz and a plain search every 0.1 s (plus their time), a correction every 20th round, timestamped."""

    def __init__(self, url: str, image_id: int):
        self.url, self.image_id = url, image_id
        self.ready: list[tuple[float, int]] = []
        self.searches: list[tuple[float, float, int]] = []
        self.acknowledged: list[str] = []
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        n = 0
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self._stop.wait(0.1):
                try:
                    self.ready.append((time.monotonic(), c.get("/readyz").status_code))
                except httpx.HTTPError:
                    self.ready.append((time.monotonic(), 0))
                t0 = time.perf_counter()
                try:
                    status = c.get("/api/images", params={"label": "ground", "sort": "confidence"}).status_code
                except httpx.HTTPError:
                    status = 0
                self.searches.append((time.monotonic(), (time.perf_counter() - t0) * 1000, status))
                n += 1
                if n % 20 == 0:
                    note = f"watcher-{n}"
                    try:
                        r = c.put(
                            f"/api/images/{self.image_id}/label", json={"label": "ground", "note": note}, headers=AUTH
                        )
                        if r.status_code == 200:
                            self.acknowledged.append(note)
                    except httpx.HTTPError:
                        pass

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(30)

    def window(self, t0: float, t1: float) -> dict:
        ready = [s for t, s in self.ready if t0 <= t <= t1]
        lat = [ms for t, ms, s in self.searches if t0 <= t <= t1 and s == 200]
        return {
            "readyz_checks": len(ready),
            "readyz_all_200": bool(ready) and all(s == 200 for s in ready),
            "searches": len(lat),
            "search_p95_ms": serve.pct(lat, 95),
            "search_errors": sum(1 for t, _, s in self.searches if t0 <= t <= t1 and s != 200),
        }


# ------------------------------------------------------------------------------------------------ attacks


def attack_stalled_exports(srv, ctx) -> dict:
    """15 clients start GET /api/export and stop reading; then they leave."""
    socks, statuses = [], []
    for _ in range(15):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", srv.port))
        s.sendall(b"GET /api/export?format=json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        socks.append(s)
    time.sleep(6)  # stalled: the watcher's searches and /readyz go on meanwhile
    for s in socks:
        s.settimeout(5)
        try:
            statuses.append(int(s.recv(64).split(b" ", 2)[1]))
        except (OSError, ValueError, IndexError):
            statuses.append(0)
        s.close()
    time.sleep(1)
    after = httpx.get(srv.url + "/api/export", params={"format": "csv"}, timeout=60)
    return {
        "answers": {str(k): statuses.count(k) for k in sorted(set(statuses))},
        "export_after_they_left": after.status_code,
        "rows_after": after.text.count("\n") - 1,
        "ok": set(statuses) <= {200, 503} and after.status_code == 200,
    }


def attack_bodies(srv, ctx) -> dict:
    """25 x 19 MB in one classify; 12 small 16-bit PNGs of 50 Mpx in all; a 200 MB JSON on the label PUT
    without a token; a 400 MB upload; a chunked body of no declared length past the limit; 40 files."""
    out = {}
    out["25x19MB_classify"], _ = raw_request(
        srv.port, head("POST", "/api/classify", 25 * 19 * 2**20), mb_chunks(8 << 20)
    )
    buf = io.BytesIO()
    PILImage.new("I;16", (2048, 2048)).save(buf, format="PNG")
    # 12 (not the 20: more than --max-files would be refused for that first) x 4.2 Mpx = 50 Mpx
    body, ctype = multipart([(f"{i}.png", buf.getvalue()) for i in range(12)])
    out["12_16bit_png_50Mpx"] = httpx.post(
        srv.url + "/api/classify", content=body, headers={"Content-Type": ctype}, timeout=60
    ).status_code
    out["200MB_json_no_token"], sent = raw_request(
        srv.port, head("PUT", "/api/images/1/label", 200 * 2**20, "application/json"), mb_chunks(8 << 20)
    )
    out["200MB_json_body_bytes_sent_before_answer"] = sent
    out["400MB_upload"], _ = raw_request(srv.port, head("POST", "/api/classify", 400 * 2**20), mb_chunks(8 << 20))

    def chunked(total):
        block = b"\0" * (1 << 20)
        for _ in range(total >> 20):
            yield b"%x\r\n" % len(block) + block + b"\r\n"

    out["chunked_80MB"], sent = raw_request(
        srv.port, head("POST", "/api/classify", None, "multipart/form-data; boundary=x"), chunked(80 << 20)
    )
    out["chunked_bytes_sent_before_answer"] = sent
    many, ctype = multipart([(f"{i}.jpg", EXAMPLES[0].read_bytes()) for i in range(40)])
    out["40_files"] = httpx.post(srv.url + "/api/classify", content=many, headers={"Content-Type": ctype}).status_code
    out["ok"] = (
        out["25x19MB_classify"] == 413
        and out["12_16bit_png_50Mpx"] == 413
        and out["200MB_json_no_token"] == 401
        and out["400MB_upload"] == 413
        and out["chunked_80MB"] == 413
        and out["40_files"] == 400
    )
    return out


def attack_slow_bodies(srv, ctx) -> dict:
    """Two uploads at 1 byte/s; meanwhile classifications every 0.5 s must be served."""
    body, ctype = multipart([("slow.jpg", EXAMPLES[0].read_bytes())])
    slow_status = []

    def slow():
        slow_status.append(
            raw_request(srv.port, head("POST", "/api/classify", len(body), ctype), (bytes([b]) for b in body), 1.0)[0]
        )

    threads = [threading.Thread(target=slow) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(1)
    fast = []
    one, one_type = multipart([("fast.jpg", EXAMPLES[1].read_bytes())])
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        while any(t.is_alive() for t in threads) and len(fast) < 40:
            fast.append(c.post("/api/classify", content=one, headers={"Content-Type": one_type}).status_code)
            time.sleep(0.5)
    for t in threads:
        t.join(60)
    return {
        "slow_uploads": slow_status,
        "classifications_meanwhile": {str(k): fast.count(k) for k in sorted(set(fast))},
        "ok": slow_status == [408, 408] and fast and all(s == 200 for s in fast),
    }


def attack_stored_xss(srv, ctx) -> dict:
    """A JPEG with HTML appended, stored as x.html; the same from another Origin."""
    hostile = EXAMPLES[2].read_bytes() + b"<html><script>alert(sessionStorage.getItem('marsvision.token'))</script>"
    body, ctype = multipart([("x.html", hostile)])
    r = httpx.post(srv.url + "/api/classify?store=true", content=body, headers={**AUTH, "Content-Type": ctype})
    item = r.json()["items"][0] if r.status_code == 200 else {}
    f = httpx.get(f"{srv.url}/api/images/{item.get('id')}/file")
    cross = httpx.post(
        srv.url + "/api/classify?store=true",
        content=body,
        headers={**AUTH, "Content-Type": ctype, "Origin": "http://attacker.example"},
    )
    out = {
        "store": r.status_code,
        "file_content_type": f.headers.get("content-type"),
        "nosniff": f.headers.get("x-content-type-options"),
        "csp": f.headers.get("content-security-policy"),
        "other_origin": cross.status_code,
    }
    out["ok"] = (
        out["file_content_type"] == "image/jpeg"
        and out["nosniff"] == "nosniff"
        and "frame-ancestors 'none'" in (out["csp"] or "")
        and cross.status_code == 403
    )
    return out


def attack_file_swap(srv, ctx) -> dict:
    """Indexed files replaced by a link to the token file, by other bytes of the same size, by a longer file."""
    planted = ctx["planted"]
    ids = ctx["planted_ids"]
    (ctx["workdir"] / "secret.txt").write_text(TOKEN)
    first, second, third = planted[:3]
    first.unlink()
    first.symlink_to(ctx["workdir"] / "secret.txt")
    data = second.read_bytes()
    second.write_bytes(data[:-16] + b"\0" * 16)
    third.write_bytes(third.read_bytes() + b"tail")
    answers, leaked = {}, False
    for name, path in (("symlink", first), ("same_size", second), ("longer", third)):
        r = httpx.get(f"{srv.url}/api/images/{ids[str(path)]}/file")
        answers[name] = r.status_code
        leaked |= TOKEN.encode() in r.content
    return {"answers": answers, "token_leaked": leaked, "ok": set(answers.values()) == {409} and not leaked}


def second_version(db_url: str, workdir: Path, name: str) -> str:
    import onnx

    model = onnx.load(str(bundled_model_path()))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, "copy": name})
    path = workdir / f"{name}.onnx"
    onnx.save(model, str(path))
    engine = open_engine(db_url)
    try:
        with sessions(engine).begin() as s:
            return register(s, path, version=name, parent=active_version(s)).version
    finally:
        engine.dispose()


def versions_of_rows(db_url: str) -> tuple[list[int], int]:
    engine = open_engine(db_url)
    try:
        with sessions(engine)() as s:
            return sorted(s.scalars(sql_select(Image.model_id).distinct())), active_version(s).id
    finally:
        engine.dispose()


def attack_activations(srv, ctx) -> dict:
    """Two activations at once; then an activation while `index` runs."""
    db_url, workdir = ctx["db_url"], ctx["workdir"]
    a, b = second_version(db_url, workdir, "abuse-a"), second_version(db_url, workdir, "abuse-b")
    answers = []

    def act(v):
        answers.append(httpx.post(f"{srv.url}/api/models/{v}/activate", headers=AUTH, timeout=300).status_code)

    threads = [threading.Thread(target=act, args=(v,)) for v in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows_versions, active = versions_of_rows(db_url)
    together = rows_versions == [active]
    # index a folder of new contents while another version is activated
    folder = workdir / "late"
    folder.mkdir(exist_ok=True)
    for i in range(ctx["late"]):
        src = EXAMPLES[i % len(EXAMPLES)]
        (folder / f"late{i:03d}.jpg").write_bytes(src.read_bytes() + f"late{i}".encode())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "marsvision.cli", "index", str(folder), "--db", db_url, "--batch-size", "8"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    engine = open_engine(db_url)
    try:  # activate once the run has written its first batch
        while proc.poll() is None:
            with sessions(engine)() as s:
                if s.scalar(sql_select(func.count(Image.id)).where(Image.path.like("%late0%"))):
                    break
            time.sleep(0.1)
    finally:
        engine.dispose()
    during = proc.poll() is None
    answers.append(httpx.post(f"{srv.url}/api/models/{a}/activate", headers=AUTH, timeout=300).status_code)
    _, err = proc.communicate(timeout=600)
    rows_versions, active = versions_of_rows(db_url)
    return {
        "activations": answers,
        "after_two_at_once_rows_on_active": together,
        "index_running_at_activation": during,
        "index_exit": proc.returncode,
        "after_index_rows_on_active": rows_versions == [active],
        "ok": together and rows_versions == [active] and proc.returncode == 0 and answers == [200, 200, 200],
    }


def attack_malformed(srv, ctx) -> dict:
    big = 2**63
    statuses = {}
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for name, call in {
            "page": lambda: c.get("/api/images", params={"page": big}),
            "sol_min": lambda: c.get("/api/images", params={"sol_min": big}),
            "sol_max": lambda: c.get("/api/export", params={"sol_max": big}),
            "id": lambda: c.get(f"/api/images/{big}"),
            "id_file": lambda: c.get(f"/api/images/{big}/file"),
            "id_label": lambda: c.put(f"/api/images/{big}/label", json={"label": "ground"}, headers=AUTH),
            "nul_filter": lambda: c.get("/api/images", params={"label": "a\x00b"}),
            "nul_export": lambda: c.get("/api/export", params={"q": "\x00"}),
            "surrogate_note": lambda: c.put(
                "/api/images/1/label",
                content=b'{"label": "ground", "note": "\\ud800"}',
                headers={**AUTH, "Content-Type": "application/json"},
            ),
        }.items():
            statuses[name] = call().status_code
    jpeg = EXAMPLES[0].read_bytes()
    for name, filename in (("nul_name", "a\x00b.jpg"), ("long_name", "x" * 300 + ".jpg")):
        body, ctype = multipart([(filename, jpeg)])
        statuses[name] = httpx.post(
            srv.url + "/api/classify", content=body, headers={"Content-Type": ctype}
        ).status_code
    return {"answers": statuses, "ok": all(s == 422 for s in statuses.values())}


def attack_two_index_runs(srv, ctx) -> dict:
    """Two `index` runs at once on a fresh database (its own: a new file, or a new PostgreSQL database)."""
    fresh = ctx["fresh_db"]()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "marsvision.cli", "index", str(REPO / "examples" / "images"), "--db", fresh]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    outs = [p.communicate(timeout=600) for p in procs]
    engine = open_engine(fresh)
    try:
        with sessions(engine)() as s:
            rows = s.scalar(sql_select(func.count(Image.id)))
            models = s.scalar(sql_select(func.count(ModelVersion.id)))
    finally:
        engine.dispose()
    codes = [p.returncode for p in procs]
    return {
        "exit_codes": codes,
        "traceback_lines": sum(o[1].count("\n") for o in outs if "Traceback" in o[1]),
        "rows": rows,
        "model_versions": models,
        "ok": codes == [0, 0] and rows == len(EXAMPLES) and models == 1,
    }


def attack_host(srv, ctx) -> dict:
    r = httpx.get(srv.url + "/api/images", headers={"Host": "rebind.attacker.example"})
    ok = httpx.get(srv.url + "/api/images")
    h = ok.headers
    headers = {k: h.get(k) for k in ("content-security-policy", "x-frame-options", "referrer-policy")}
    return {
        "foreign_host": r.status_code,
        "own_host": ok.status_code,
        "headers": headers,
        "ok": r.status_code == 400 and ok.status_code == 200 and h.get("x-frame-options") == "DENY",
    }


def attack_same_content_three_names(srv, ctx) -> dict:
    data = EXAMPLES[3].read_bytes() + b"three-names"
    body, ctype = multipart([(n, data) for n in ("one.jpg", "two.html", "three.png")])
    r = httpx.post(srv.url + "/api/classify?store=true", content=body, headers={**AUTH, "Content-Type": ctype})
    uploads = ctx["workdir"] / "uploads"
    same = [
        p for p in uploads.iterdir() if hashlib.sha256(p.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    ]
    ids = {i.get("id") for i in r.json()["items"]} if r.status_code == 200 else set()
    return {
        "status": r.status_code,
        "files_written": len(same),
        "rows": len(ids),
        "ok": len(same) == 1 and len(ids) == 1,
    }


ATTACKS = [
    ("1 stalled exports", attack_stalled_exports),
    ("2 huge bodies, many files, pixels", attack_bodies),
    ("3 slow bodies vs classification slots", attack_slow_bodies),
    ("4 stored XSS through uploads", attack_stored_xss),
    ("5 /file after the indexed file changed", attack_file_swap),
    ("6 activations vs activations and index", attack_activations),
    ("7 malformed input", attack_malformed),
    ("8 two index runs on a fresh database", attack_two_index_runs),
    ("9 Host header, secure headers", attack_host),
    ("10 same content under three names", attack_same_content_three_names),
]


# --------------------------------------------------------------------------------------------------- run


def run_backend(db_url: str, workdir: Path, args, fresh_db) -> dict:
    print(f"building {db_url.split(':')[0]} archive ({args.rows:,} rows) …", flush=True)
    info, _ = serve.build_archive(db_url, None, args.rows, 0.03, 0, None, 0)
    if db_url.startswith("postgresql"):  # serve.py bulk-inserts its copies with their ids: move the sequence on
        engine = open_engine(db_url)
        with engine.begin() as conn:
            conn.execute(text("SELECT setval(pg_get_serial_sequence('images', 'id'), (SELECT max(id) FROM images))"))
        engine.dispose()
    planted_dir = workdir / "planted"
    planted_dir.mkdir()
    planted = []
    for i in range(args.planted):
        p = planted_dir / f"planted{i}.jpg"
        p.write_bytes(EXAMPLES[i % len(EXAMPLES)].read_bytes() + f"planted{i}".encode())
        planted.append(p.resolve())
    run_index([str(planted_dir)], IndexConfig(db=db_url), progress=False)
    engine = open_engine(db_url)
    with sessions(engine)() as s:
        planted_ids = {p: i for p, i in s.execute(sql_select(Image.path, Image.id).where(Image.path.like("%planted%")))}
        watch_id = s.scalar(sql_select(Image.id).where(Image.error.is_(None)).order_by(Image.id))
    engine.dispose()
    srv = AbuseServer(db_url, workdir, ["--body-timeout", str(args.body_timeout)])
    out: dict = {"archive_rows": info["rows"] + args.planted, "attacks": {}}
    try:
        out["ready_seconds"] = round(srv.wait_ready(), 1)
        watcher = Watcher(srv.url, watch_id)
        watcher.start()
        time.sleep(args.quiet)
        out["quiet"] = watcher.window(0, time.monotonic())
        ctx = {
            "db_url": db_url,
            "workdir": workdir,
            "planted": planted,
            "planted_ids": {str(k): v for k, v in planted_ids.items()},
            "late": args.late,
            "fresh_db": fresh_db,
        }
        for name, attack in ATTACKS:
            srv.sampled_peak_kb = 0
            t0 = time.monotonic()
            try:
                res = attack(srv, ctx)
            except Exception as e:  # noqa: BLE001 — a failed attack is a result, not the end of the run
                res = {"error": f"{type(e).__name__}: {e}", "ok": False}
            time.sleep(0.6)  # at least one /readyz and one search after the attack itself
            res.update(watcher.window(t0, time.monotonic()))
            res["seconds"] = round(time.monotonic() - t0, 1)
            res["peak_rss_mb"] = round(srv.sampled_peak_kb / 1024, 1)
            out["attacks"][name] = res
            print(f"  {name}: {json.dumps(res)[:400]}", flush=True)
        watcher.stop()
        out["server_peak_rss_mb"] = round(max(srv.hwm_mb(), srv.sampled_peak_kb / 1024), 1)
        out["statuses_500_in_log"] = srv.tail(10**7).count("500 Internal Server Error")
        out["tracebacks_in_log"] = srv.tail(10**7).count("Traceback")
    finally:
        srv.stop()
    engine = open_engine(db_url)
    with sessions(engine)() as s:
        notes = set(s.scalars(sql_select(Correction.note)))
    engine.dispose()
    out["acknowledged_writes"] = len(watcher.acknowledged)
    out["acknowledged_writes_lost"] = len([n for n in watcher.acknowledged if n not in notes])
    out["watcher_search_errors"] = sum(1 for _, _, s in watcher.searches if s != 200)
    return out


def targets(result: dict) -> list[dict]:
    rows = []
    for backend, res in result["backends"].items():
        if "attacks" not in res:
            continue
        quiet = res["quiet"]["search_p95_ms"] or 0
        for name, a in res["attacks"].items():
            p95 = a.get("search_p95_ms")
            rows.append(
                {
                    "database": backend,
                    "attack": name,
                    "answered_as_designed": a["ok"],
                    "readyz_200": a["readyz_all_200"],
                    "search_p95_ratio": round(p95 / quiet, 2) if p95 and quiet else None,
                    "peak_rss_mb": a["peak_rss_mb"],
                }
            )
    return rows


def markdown(result: dict) -> str:
    lines = [
        "# Abuse: the ten attacks of issue 23 against a real server",
        "",
        f"`{result['command']}` — {result['machine'].get('cpu_count', '?')} CPUs, wall {result['wall_seconds']} s. "
        f"Archive: {result['args']['rows']:,} rows (examples/images indexed, synthetic copies, as "
        f"benchmarks/serve.py builds it) + {result['args']['planted']} planted files; server with a token, "
        f"`--body-timeout {result['args']['body_timeout']:g}`, other limits at their defaults.",
        "",
        f"Targets: /readyz 200 throughout, search p95 ≤ {P95_FACTOR:g}× quiet, peak RSS ≤ {RSS_MB:g} MB, "
        "no acknowledged write lost, nothing outside the indexed content readable, no 500.",
        "",
    ]
    for backend, res in result["backends"].items():
        if "attacks" not in res:
            lines += [f"## {backend}: skipped ({res.get('skipped')})", ""]
            continue
        q = res["quiet"]
        ratios = {
            n: a["search_p95_ms"] / q["search_p95_ms"]
            for n, a in res["attacks"].items()
            if a.get("search_p95_ms") and q["search_p95_ms"]
        }
        over = [
            f"{n} ({r:.1f}×, {res['attacks'][n]['searches']} searches)" for n, r in ratios.items() if r > P95_FACTOR
        ]
        yes = {True: "yes", False: "**no**"}
        designed = yes[all(a["ok"] for a in res["attacks"].values())]
        ready = yes[all(a["readyz_all_200"] for a in res["attacks"].values())]
        lines += [
            f"## {backend}",
            "",
            "Targets: "
            + "; ".join(
                [
                    f"every attack answered as designed: {designed}",
                    f"/readyz 200 throughout: {ready}",
                    f"search p95 ≤ {P95_FACTOR:g}× quiet: " + ("yes" if not over else "**no**: " + ", ".join(over)),
                    f"peak RSS ≤ {RSS_MB:g} MB: {yes[res['server_peak_rss_mb'] <= RSS_MB]} "
                    f"({res['server_peak_rss_mb']} MB)",
                    f"acknowledged writes lost: {res['acknowledged_writes_lost']} of {res['acknowledged_writes']}",
                    f"500s: {res['statuses_500_in_log']}",
                ]
            )
            + ".",
            "",
            f"Quiet: search p95 {q['search_p95_ms']:.1f} ms ({q['searches']} searches). Server peak RSS "
            f"{res['server_peak_rss_mb']} MB. Acknowledged corrections {res['acknowledged_writes']}, lost "
            f"{res['acknowledged_writes_lost']}. 500s in the server log: {res['statuses_500_in_log']}, tracebacks: "
            f"{res['tracebacks_in_log']}.",
            "",
            "| attack | answer | as designed | /readyz 200 throughout | search p95 ms (× quiet) | peak RSS MB | s |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, a in res["attacks"].items():
            shown = {
                k: v
                for k, v in a.items()
                if k
                not in (
                    "ok",
                    "readyz_checks",
                    "readyz_all_200",
                    "searches",
                    "search_p95_ms",
                    "search_errors",
                    "seconds",
                    "peak_rss_mb",
                    "csp",
                )
            }
            p95 = a.get("search_p95_ms")
            ratio = f"{p95:.1f} ({p95 / q['search_p95_ms']:.1f}×)" if p95 and q["search_p95_ms"] else "–"
            lines.append(
                f"| {name} | `{json.dumps(shown)[:300]}` | {'yes' if a['ok'] else '**no**'} | "
                f"{'yes' if a['readyz_all_200'] else '**no**'} ({a['readyz_checks']}) | {ratio} | "
                f"{a['peak_rss_mb']} | {a['seconds']} |"
            )
        lines.append("")
    return "\n".join(lines)


def fresh_sqlite(workdir: Path):
    n = iter(range(1000))
    return lambda: f"sqlite:///{workdir / f'fresh{next(n)}.db'}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    p.add_argument("--rows", type=int, default=3000)
    p.add_argument("--planted", type=int, default=6, help="indexed copies the /file attack rewrites")
    p.add_argument("--late", type=int, default=96, help="images the index run indexes during an activation")
    p.add_argument("--body-timeout", type=float, default=8.0)
    p.add_argument("--quiet", type=float, default=8.0, help="seconds of quiet searches first")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    t0 = time.perf_counter()
    result: dict = {
        "command": "python benchmarks/abuse.py " + " ".join(sys.argv[1:]),
        "args": vars(args),
        "machine": serve.machine_info(),
        "backends": {},
    }
    for backend in args.backends:
        workdir = Path(tempfile.mkdtemp(prefix=f"marsvision-abuse-{backend}-"))
        try:
            if backend == "sqlite":
                url = f"sqlite:///{workdir / 'archive.db'}"
                result["backends"]["sqlite"] = run_backend(url, workdir, args, fresh_sqlite(workdir))
                continue
            try:
                with serve.postgres_server() as (url, version, _):
                    result["postgres_version"] = version

                    def fresh_db(url=url):
                        name = f"fresh_{int(time.time() * 1000)}"
                        admin = create_engine(url, isolation_level="AUTOCOMMIT")
                        with admin.connect() as conn:
                            conn.execute(text(f'CREATE DATABASE "{name}"'))
                        admin.dispose()
                        return url.rsplit("/", 1)[0] + "/" + name

                    result["backends"]["postgresql"] = run_backend(url, workdir, args, fresh_db)
            except serve.PostgresUnavailable as e:
                result["backends"]["postgresql"] = {"skipped": str(e)}
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    result["targets"] = targets(result)
    md = markdown(result)
    if args.no_write:
        print(md)
    else:
        write_results("abuse", result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

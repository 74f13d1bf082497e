"""A class at once: N people, each in their own workspace, upload a zip of their pictures, start a Quick model, read
Evaluate and label a new picture, all at the same time against one server process (one job queue).

    python benchmarks/bench_load.py [--sessions 30] [--img-size 64]

Each session is Streamlit's AppTest (the app's own pages, widgets and session state, no browser) driven from its own
thread; the job manager, the caches and the runs folder are the process's, shared as on a real server. The sessions'
page runs take turns (AppTest's limit, see _PAGE_TURN); their jobs queue and train while the others keep clicking. Prints one
JSON object: sessions, jobs, every page run's time (p50, p95, max), how long each waited in the queue, peak RSS.
tests/ui/test_load.py runs it with 5 sessions and checks that nobody saw anybody else's data or results.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass
class Session:
    index: int
    classes: list[str]
    page_seconds: list[float] = field(default_factory=list)
    run_dir: str | None = None
    accuracy_shown: str | None = None
    runs_listed: list[str] = field(default_factory=list)  # as Evaluate's run chooser offers them
    run_evaluated: str | None = None
    predicted: str | None = None
    job_submitted: float | None = None
    job_started: float | None = None
    error: str | None = None


def _picture(color: tuple[int, int, int], seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(color) + rng.integers(-25, 25, (48, 48, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _zip_of(session: Session) -> bytes:
    colors = [(220, 40, 40), (40, 40, 220)]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, color in zip(session.classes, colors, strict=True):
            for i in range(10):
                zf.writestr(
                    f"pictures/{name}/{i}.png", _picture(color, session.index * 1000 + i + 500 * (color[0] > 100))
                )
    return out.getvalue()


# AppTest instances in one process cannot run their scripts at the same instant (tried: a page switch raced and the
# wrong page rendered), so their page runs take turns; the jobs train in the background meanwhile, as on a server.
_PAGE_TURN = threading.Lock()


def _timed(session: Session, at) -> None:
    with _PAGE_TURN:
        tick = time.perf_counter()
        at.run()
        session.page_seconds.append(time.perf_counter() - tick)


def _one_person(session: Session, img_size: int, timeout: float) -> None:
    from streamlit.testing.v1 import AppTest

    from pages import _common

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    try:
        at.session_state[_common.WORKSPACE] = f"student {session.index}"
        _timed(session, at)
        at.switch_page("pages/data.py")
        _timed(session, at)
        at.radio(key="data_source").set_value("zip")
        _timed(session, at)
        at.file_uploader[0].set_value((f"student{session.index}.zip", _zip_of(session), "application/zip"))
        _timed(session, at)
        at.switch_page("pages/train.py")
        _timed(session, at)
        at.select_slider(key="train_img_size").set_value(img_size)
        _timed(session, at)
        at.button(key="train_quick").click()
        _timed(session, at)
        job = _common.job_manager().get(at.session_state[_common.JOB])
        session.job_submitted = job.snapshot().submitted_at  # when the queue took it (inside that page run)
        deadline = time.monotonic() + timeout
        while job.snapshot().active and time.monotonic() < deadline:
            time.sleep(1.0)  # the browser's refresh timer: one page run a second while it waits
            _timed(session, at)
        snap = job.snapshot()
        session.job_started, session.run_dir = snap.started_at, snap.run_dir
        if snap.state != "finished":
            raise RuntimeError(f"job {snap.id} ended {snap.state}: {snap.error}")
        at.switch_page("pages/evaluate.py")
        _timed(session, at)
        session.accuracy_shown = next(m.value for m in at.metric if m.label == "Validation accuracy")
        chooser = at.selectbox(key="evaluate_run")
        session.runs_listed, session.run_evaluated = list(chooser.options), chooser.value
        at.switch_page("pages/predict.py")
        _timed(session, at)
        at.file_uploader(key="predict_files").set_value([("new.png", _picture((215, 45, 45), 99), "image/png")])
        _timed(session, at)
        session.predicted = next(
            m.value.split("**")[1].replace("\\", "") for m in at.markdown if "confident" in m.value
        )
    except Exception as exc:  # noqa: BLE001 - a session's failure is a result to report, not a crash of the others
        shown = []
        with contextlib.suppress(Exception):  # the page as it was, when there was one
            shown = [e.value for e in at.error] + [m.value for m in at.markdown][:3]
        session.error = f"{type(exc).__name__}: {exc} (page: {shown})"


def run_load(sessions: int, img_size: int = 64, timeout: float = 900) -> tuple[dict, list[Session]]:
    """N sessions at once in this process; the figures and each session's record."""
    people = [Session(i, [f"s{i}_red", f"s{i}_blue"]) for i in range(sessions)]
    threads = [threading.Thread(target=_one_person, args=(p, img_size, timeout)) for p in people]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
        time.sleep(0.2)  # people arrive over a few seconds, not in the same millisecond
    for thread in threads:
        thread.join()
    pages = sorted(t for p in people for t in p.page_seconds)
    waits = [p.job_started - p.job_submitted for p in people if p.job_started and p.job_submitted]
    figures = {
        "sessions": sessions,
        "finished": sum(p.error is None for p in people),
        "errors": [p.error for p in people if p.error],
        "jobs": len({p.run_dir for p in people if p.run_dir}),
        "saw_only_their_own": sum(
            p.runs_listed is not None
            and len(p.runs_listed) == 1
            and p.run_evaluated == p.run_dir
            and p.predicted in p.classes
            for p in people
        ),
        "served_in_order": [p.job_started for p in sorted(people, key=lambda p: p.job_submitted or 0)]
        == sorted(p.job_started or 0 for p in people),
        "page_runs": len(pages),
        "page_seconds_p50": round(statistics.median(pages), 3) if pages else None,
        "page_seconds_p95": round(pages[int(0.95 * (len(pages) - 1))], 3) if pages else None,
        "page_seconds_max": round(pages[-1], 3) if pages else None,
        "queue_wait_seconds_max": round(max(waits), 1) if waits else None,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    return figures, people


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--img-size", type=int, default=64)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-load-"))
    for name in ("runs", "cache", "data"):
        os.environ.setdefault(f"HEADSTART_{name.upper()}_DIR", str(base / name))
    figures, _ = run_load(args.sessions, args.img_size)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()

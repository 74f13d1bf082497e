"""What every page of the app shares: the one job manager, the state kept across pages, engine calls turned into
sentences, cached heavy objects, and small formatting helpers.

Not a page itself (st.navigation in app.py lists the pages); the pages import it as `pages._common`.
"""

from __future__ import annotations

import os
import pickle
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from tl_core import formatting as fmt
from tl_core import settings
from tl_core.errors import user_message


def leave_pages_folder_mode() -> None:
    """Streamlit's one unsupported switch that Headstart flips, kept here alone (tests/ui/test_navigation.py checks it).

    On a fresh server, before any session has run app.py, Streamlit treats the pages/ folder as the old 'pages
    folder' app: a first visit to a deep link (/train) runs that page alone, with every file of pages/ in the menu.
    Streamlit offers no setting for this (st.navigation turns it off only once app.py has run, and the folder's
    name is fixed by the product's layout), so the first page to import this module switches it off and reruns.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory is True:
        PagesManager.uses_pages_directory = False
        st.rerun()


leave_pages_folder_mode()


@dataclass(frozen=True)
class PageSpec:
    path: str
    title: str
    icon: str
    section: str = "Steps"


# The app's pages in menu order: app.py's navigation and every link between pages come from here.
PAGES = {
    "home": PageSpec("pages/home.py", "Home", ":material/home:", section=""),
    "data": PageSpec("pages/data.py", "1. Data", ":material/photo_library:"),
    "model": PageSpec("pages/model.py", "2. Model", ":material/account_tree:"),
    "train": PageSpec("pages/train.py", "3. Train", ":material/model_training:"),
    "evaluate": PageSpec("pages/evaluate.py", "4. Evaluate", ":material/fact_check:"),
    "predict": PageSpec("pages/predict.py", "5. Predict", ":material/image_search:"),
    "export": PageSpec("pages/export.py", "6. Export", ":material/download:"),
}


def navigation():
    """st.navigation over PAGES, Home first and default; app.py runs the page it returns."""
    sections: dict[str, list] = {}
    for key, page in PAGES.items():
        sections.setdefault(page.section, []).append(
            st.Page(page.path, title=page.title, icon=page.icon, default=key == "home")
        )
    return st.navigation(sections)


# How often the Train page redraws a running job: the progress line, and the curves (plotly charts, the browser's
# dearest redraw). Every redraw takes CPU from training when the browser runs on the same machine; docs/BENCHMARKS.md
# has the measurements behind these defaults.
LIVE_REFRESH_S = float(os.environ.get("HEADSTART_LIVE_REFRESH_S", "2.0"))
CURVES_REFRESH_S = float(os.environ.get("HEADSTART_CURVES_REFRESH_S", "10.0"))

# Session state shared across pages (plain keys, not widget keys, so they survive page switches).
DATASET = "hs_dataset"  # {"path": str, "origin": str}
BACKBONE = "hs_backbone"  # timm name
WEIGHTS = "hs_weights"  # auto | hub | offline | none | a weights file path
RUN = "hs_run"  # run folder (str) picked on Evaluate/Predict/Export, or the last one trained
JOB = "hs_job"  # id of the job this session started last
WORKSPACE = "hs_workspace"  # the name this person's runs are kept under ("" or absent: the shared runs folder)


# ---------------------------------------------------------------- choices that survive a refresh
# A refresh, a second tab or a server restart is a new session with empty state. Each browser carries a random id
# in a cookie; the choices below are saved under it after every run of a page and restored once per session.
BROWSER_COOKIE = "headstart_browser"
RESTORED = "hs_restored"
BROWSER_ID = "hs_browser"
RESTORED_WIDGETS = "hs_restored_widgets"
_BROWSER_ID_JS = """
export default function ({ setStateValue }) {
  const found = document.cookie.match(/(?:^|; )headstart_browser=([0-9a-f]{32})/);
  let id = found && found[1];
  if (!id) {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    id = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    document.cookie = `headstart_browser=${id}; path=/; max-age=31536000; SameSite=Lax`;
  }
  setStateValue("id", id);
}
"""


def browser_id() -> str | None:
    """This browser's id: from its cookie, or (first visit) from a tiny component that sets the cookie."""
    from tl_core.browser_state import is_valid_id

    cookie = st.context.cookies.get(BROWSER_COOKIE)
    if is_valid_id(cookie):
        return cookie
    if is_valid_id(st.session_state.get(BROWSER_ID)):  # the cookie was set during this session: not in its headers
        return st.session_state[BROWSER_ID]
    component = st.components.v2.component("headstart_browser_id", js=_BROWSER_ID_JS)
    found = getattr(component(key="hs_browser_id", on_id_change=lambda: None, height=0), "id", None)
    if is_valid_id(found):
        st.session_state[BROWSER_ID] = found
        return found
    return None


def _widget_keys() -> list[str]:
    """Keys of widgets that keep their value across pages (persist_state): restored as their starting value."""
    from tl_core.config import TrainConfig

    return [f"train_{name}" for name in TrainConfig.defaults()]


def persisted_keys() -> list[str]:
    """The session-state keys worth keeping: the data set, the model, the run, and every training setting."""
    return [DATASET, BACKBONE, WEIGHTS, RUN, JOB, WORKSPACE, "train_freeze_depth", "train_depth_backbone"] + (
        _widget_keys()
    )


def restore_choices() -> None:
    """Once per session: put back what this browser had chosen (a data set only if it is still on disk).

    Widgets get theirs as their starting value (`restored`); a value written into a persisted widget's key before
    it first shows is not reliably taken (Streamlit's persist_state bookkeeping wins).
    """
    from tl_core import browser_state

    if st.session_state.get(RESTORED):
        return
    found = browser_id()
    if found is None:
        return
    st.session_state[RESTORED] = True
    saved = browser_state.load(found)
    dataset = saved.get(DATASET)
    if isinstance(dataset, dict) and not Path(str(dataset.get("path", ""))).exists():
        saved.pop(DATASET)
    widgets = set(_widget_keys())
    st.session_state[RESTORED_WIDGETS] = {k: v for k, v in saved.items() if k in widgets}
    for key in persisted_keys():
        if key in saved and key not in widgets and key not in st.session_state:
            st.session_state[key] = saved[key]


def restored(key: str, default):
    """The value this browser last had for the widget `key`, else `default`."""
    return st.session_state.get(RESTORED_WIDGETS, {}).get(key, default)


def remember_choices() -> None:
    """Save this session's choices for its browser (after each run of a page; skipped when nothing changed)."""
    from tl_core import browser_state

    found = st.session_state.get(RESTORED) and browser_id()
    if not found:
        return
    state = {key: st.session_state[key] for key in persisted_keys() if key in st.session_state}
    for key, value in st.session_state.get(RESTORED_WIDGETS, {}).items():
        state.setdefault(key, value)  # a setting whose widget this page does not show stays as it was
    if state != st.session_state.get("hs_saved_choices"):
        browser_state.save(found, state)
        st.session_state["hs_saved_choices"] = state


# ---------------------------------------------------------------- errors as sentences


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]#|<>~$:])")  # what makes markdown, HTML, maths or colour


def plain(text: str) -> str:
    """`text` (a class name, a file name, a message quoting them) shown as typed inside markdown: a class called
    '**new**' or '<img ...>' is those characters, never bold type or an image."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


@contextmanager
def user_errors(action: str) -> Iterator[None]:
    """Show any failure inside the block as a sentence ("<action>: <what happened>") instead of a traceback.

    Streamlit's own control flow (st.rerun, st.stop, st.switch_page) derives from BaseException and passes through.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - the whole point: nothing raw reaches the page
        st.error(f"{action}: {plain(user_message(exc))}", icon=":material/error:")


def attempt(action: str, fn: Callable, *args, **kwargs):
    """fn(*args, **kwargs), or None after showing the failure as a sentence."""
    with user_errors(action):
        return fn(*args, **kwargs)
    return None


# ---------------------------------------------------------------- page furniture


def header(title: str, purpose: str) -> None:
    """Every page starts with its name and one line saying what it is for."""
    st.title(title)
    st.caption(purpose)


def chart(where, figure, key: str, **kwargs) -> None:
    """A plotly chart and, under it, its numbers in words (tl_core.plots.describe): the text alternative for
    people who cannot see it."""
    from tl_core.plots import describe

    where.plotly_chart(figure, key=key, **kwargs)
    where.caption(plain(describe(figure)))


def needs(what: str, page: str, label: str) -> None:
    """What is missing before this page makes sense, with the way to get it."""
    st.info(what, icon=":material/arrow_back:")
    st.page_link(PAGES[page].path, label=label, icon=":material/arrow_forward:")


def next_step(text: str, page: str, label: str) -> None:
    st.divider()
    st.markdown(f"**Next:** {text}")
    st.page_link(PAGES[page].path, label=label, icon=":material/arrow_forward:")


# ---------------------------------------------------------------- formatting: one rule, tl_core.formatting

pct, duration, size, count, millions, speed = fmt.pct, fmt.duration, fmt.size, fmt.count, fmt.millions, fmt.speed


def run_label(run) -> str:
    """'Fine-tune the top · EfficientNet-Lite0 · leaves · 1 Dec 14:05 · finished · 93.0%' for a RunInfo."""
    acc = (run.summary or {}).get("best_val_accuracy")
    status = "" if run.status == "finished" else f" · {run.status}"
    return run.title + status + (f" · {pct(acc)}" if acc is not None else "")


# ---------------------------------------------------------------- jobs and device


_MANAGERS: list = []  # every manager made in this process, so tests (and only they) can shut them all down


@st.cache_resource(show_spinner=False)
def job_manager():
    """The one job manager of this server process, shared by every browser tab and every person."""
    from tl_core.jobs import JobManager

    manager = JobManager()
    _MANAGERS.append(manager)
    return manager


def shutdown_job_managers(timeout: float = 60.0) -> None:
    """Stop every job and worker of this process and forget the cached manager (between tests)."""
    while _MANAGERS:
        _MANAGERS.pop().shutdown(timeout)
    job_manager.clear()


@st.cache_resource(show_spinner=False)
def device_description() -> str:
    from tl_core.devices import describe_device

    return describe_device()


@st.cache_resource(show_spinner=False)
def device_choices() -> list:
    """The devices this server can train on (tl_core.devices.device_choices): found once, as CUDA is touched once."""
    from tl_core.devices import device_choices as found

    return found()


@st.cache_resource(show_spinner=False)
def device_type() -> str:
    from tl_core.devices import pick_device

    return pick_device().type


def runs_dir() -> Path:
    """This session's runs folder: its workspace's, else the shared one."""
    return settings.workspace_runs_dir(st.session_state.get(WORKSPACE))


def job_to_show():
    """The job a page should follow: this session's last one, else the one running now, else the newest here;
    only jobs of this session's workspace (another workspace's curves and results are not this person's to see)."""
    manager = job_manager()
    mine = manager.get(st.session_state.get(JOB, ""))
    if mine is not None and mine.snapshot().active:
        return mine
    here = str(runs_dir())
    active = [j for j in manager.active_jobs() if j.config.runs_dir == here]
    if active:
        return active[-1]  # the oldest active one: the one training now, not the last queued
    if mine is not None:
        return mine
    jobs = [j for j in manager.jobs() if j.config.runs_dir == here]
    return jobs[0] if jobs else None


# ---------------------------------------------------------------- runs


def list_runs(with_model: bool = False) -> list:
    from tl_core.runs import list_runs as _list_runs

    try:
        runs = _list_runs(runs_dir())
    except OSError as exc:
        st.error(f"The runs folder '{runs_dir()}' cannot be read ({exc.strerror}). Check that it exists.")
        return []
    if with_model:
        runs = [r for r in runs if r.has_model and r.status != "running"]
    return runs


def pick_run(key: str):
    """A run chooser for Evaluate/Predict/Export; the choice is shared by those pages. None when there is no run."""
    runs = list_runs(with_model=True)
    if not runs:
        return None
    by_dir = {str(r.run_dir): r for r in runs}
    chosen = st.session_state.get(RUN)
    if chosen not in by_dir:
        chosen = str(runs[0].run_dir)
    options = list(by_dir)
    picked = st.selectbox(
        "Trained model (run)",
        options,
        index=options.index(chosen),
        format_func=lambda d: run_label(by_dir[d]),
        key=key,
        help="Every finished training run is kept in its own folder; the newest comes first.",
    )
    st.session_state[RUN] = picked
    return by_dir[picked]


@st.cache_resource(show_spinner="Loading the trained model...", max_entries=4)
def predictor(run_dir: str, weights_mtime: float, rule_mtime: float = 0.0):
    """The run's Predictor, loaded once per version of its weights and of its operating point."""
    from tl_core.predict import Predictor

    return Predictor.from_run(run_dir)


def heat_map(predictor, image, class_index: int | None = None):
    """The picture as the model saw it with Grad-CAM laid over it: where the evidence for the class was."""
    from tl_core.explain import grad_cam, overlay

    heat, _ = grad_cam(predictor, image, class_index)
    return overlay(image, heat, predictor.spec.img_size)


def load_predictor(run_dir: Path):
    from tl_core.operating_point import FILE

    def mtime(path: Path) -> float:
        return path.stat().st_mtime if path.exists() else 0.0

    return predictor(str(run_dir), mtime(Path(run_dir) / "model.safetensors"), mtime(Path(run_dir) / FILE))


def prepare_training(
    dataset: str, backbone: str, settings: dict, depth: int | None = None, weights: str | None = None
) -> None:
    """Set the Train page up for a next run (the data set, the backbone, some settings, the freeze depth) and go
    there; the person reads it and presses Start. Settings become the widgets' starting values: a value written
    into a persisted widget's key is not reliably taken (see `restore_choices`)."""
    set_dataset(Path(dataset), Path(dataset).name)
    st.session_state[BACKBONE] = backbone
    if weights is not None:
        st.session_state[WEIGHTS] = weights
    starting = st.session_state.setdefault(RESTORED_WIDGETS, {})
    for name, value in settings.items():
        starting[f"train_{name}"] = value
        st.session_state.pop(f"train_{name}", None)
    if depth is not None:
        st.session_state["train_depth_backbone"] = backbone
        st.session_state["train_freeze_depth"] = depth
        generation = st.session_state.setdefault("train_depth_widgets", {"strategy": 0, "slider": 0})
        generation["strategy"] += 1
        generation["slider"] += 1
    st.switch_page(PAGES["train"].path)


# ---------------------------------------------------------------- data sets


def current_dataset() -> dict | None:
    return st.session_state.get(DATASET)


def set_dataset(path: Path, origin: str) -> None:
    st.session_state[DATASET] = {"path": str(path), "origin": origin}


def _tree_signature(path: str) -> tuple[int, float]:
    """Cheap fingerprint of a folder (file count, newest change), so a rescan happens only when it changed."""
    p = Path(path)
    if p.is_file():
        stat = p.stat()
        return 1, stat.st_mtime
    count, newest = 0, 0.0
    for dirpath, _dirs, files in os.walk(p):
        count += len(files)
        newest = max(newest, os.stat(dirpath).st_mtime)
    return count, newest


SCANS_KEPT = 16  # data set scans kept by the server (a 50,000-picture manifest is about 7 MB)
SCAN_POLL_S = 0.25  # how often a page run waiting on a scan redraws its progress


@dataclass
class _Scan:
    """One folder's check, running on its own thread: page runs come and go, the check goes on to its end."""

    done: int = 0
    total: int = 0
    finished: threading.Event = field(default_factory=threading.Event)
    manifest: bytes | None = None  # pickled: each caller unpickles its own copy, as st.cache_data gave
    error: Exception | None = None

    def run(self, path: str, val_split: float, test_split: float, seed: int) -> None:
        from tl_core.data import scan_dataset

        def count(done: int, total: int) -> None:
            self.done, self.total = done, total

        try:
            manifest = scan_dataset(
                path, val_fraction=val_split, test_fraction=test_split, seed=seed, on_progress=count
            )
            self.manifest = pickle.dumps(manifest)
        except Exception as exc:  # noqa: BLE001 - handed to the page run that waits for it
            self.error = exc
        finally:
            self.finished.set()


@st.cache_resource(show_spinner=False)
def _scans() -> tuple[OrderedDict, threading.Lock]:
    """The server's scans by folder, split settings and folder signature. Not `st.cache_data`: a scan run inside the
    page run stops with it (every click on a 50,000-picture folder's page began the check again), and a progress bar
    drawn inside a cached function is replayed on every later hit, into a placeholder of that earlier run."""
    return OrderedDict(), threading.Lock()


def scan(path: str, val_split: float, test_split: float, seed: int, on_progress: Callable | None = None):
    """The data set manifest of `path` (DataError on unusable data), rescanned only when the folder changed.

    The check runs once however many page runs (or people) ask for it meanwhile; `on_progress(done, total)` hears
    of it as it goes (see `scan_progress`). A page run that stops (a click) leaves it running for the next."""
    key = (path, val_split, test_split, seed, _tree_signature(path))
    store, lock = _scans()
    with lock:
        job = store.get(key)
        if job is None or job.error is not None:  # a failed check is tried again, as the folder may be fixed
            job = store[key] = _Scan()
            threading.Thread(target=job.run, args=key[:4], name="headstart-scan", daemon=True).start()
        store.move_to_end(key)
        for old in [k for k, held in store.items() if held.finished.is_set()][: max(0, len(store) - SCANS_KEPT)]:
            del store[old]
    while not job.finished.wait(SCAN_POLL_S):
        if on_progress and job.total:
            on_progress(job.done, job.total)
    if job.error is not None:
        raise job.error.with_traceback(None)  # the same error for each run that waited: not their tracebacks piled up
    return pickle.loads(job.manifest)


def scan_progress(where) -> Callable[[int, int], None]:
    """A progress callback that draws "Checked 12,000 of 50,000 pictures" in `where` (an `st.empty()`). It redraws
    at each whole percent only: every redraw is a message to the browser, and the scan reports every 25 files."""
    shown = -1

    def report(done: int, total: int) -> None:
        nonlocal shown
        percent = done * 100 // max(total, 1)
        if percent != shown:
            shown = percent
            where.progress(percent / 100, text=f"Checked {done:,} of {total:,} pictures...")

    return report


def split_settings() -> tuple[float, float, int]:
    """Validation share, test share and seed as set under Train -> Advanced (defaults until then)."""
    from tl_core.config import TrainConfig

    defaults, ss = TrainConfig.defaults(), st.session_state
    return tuple(ss.get(f"train_{name}", defaults[name]) for name in ("val_split", "test_split", "seed"))


@st.cache_data(show_spinner=False, max_entries=2000)
def thumbnail(path: str, size: int = 112):
    from tl_core.images import open_rgb

    img = open_rgb(path, draft_size=size)
    img.thumbnail((size, size))
    return img


# ---------------------------------------------------------------- backbones


@st.cache_data(show_spinner=False, ttl=120)
def weight_sources(name: str) -> dict[str, bool]:
    from tl_core.backbones import available_sources

    return available_sources(name, probe_hub=True)


def weights_here(name: str) -> str:
    """One phrase: where pretrained weights for `name` would come from on this machine."""
    from tl_core.backbones import weights_phrase

    return weights_phrase(weight_sources(name))


def usable_here(name: str) -> str:
    """'yes: offline package' / 'no: its weights need the internet (model hub)': can it be used on this computer."""
    found = weights_here(name)
    return f"yes: {found}" if has_pretrained(name) else "no: its weights need the internet (model hub)"


def has_pretrained(name: str) -> bool:
    return any(weight_sources(name).values())


def recommend_backbone() -> tuple[str, str]:
    """(timm name, why) for this machine (tl_core.backbones.recommend, with the hub probed at most every 2 min)."""
    from tl_core.backbones import recommend

    return recommend(device_type() == "cuda", weight_sources)


def chosen_backbone() -> str:
    if BACKBONE not in st.session_state:
        st.session_state[BACKBONE] = recommend_backbone()[0]
    return st.session_state[BACKBONE]


def chosen_weights() -> str:
    return st.session_state.get(WEIGHTS, "auto")


@st.cache_resource(show_spinner="Reading the backbone's structure...", max_entries=16)
def freeze_plan(name: str, num_classes: int):
    """The backbone's blocks and parameter counts (a FreezePlan with nothing frozen); no weights are read."""
    from tl_core.freezing import backbone_structure

    return backbone_structure(name, num_classes)

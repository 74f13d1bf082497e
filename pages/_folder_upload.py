"""The Data page's folder uploader: the browser sends the folder in bounded batches and the server confirms each.

Streamlit's own `file_uploader(accept_multiple_files="directory")` sends every file at once; with thousands of
pictures the browser drops requests and a data set arrives with holes that nothing reports. This small v2 component
(`_folder_upload.js`) sends one batch at a time and waits for the server's confirmation; the files land in a
`tl_core.uploads.FolderUpload`, which becomes the data set only once every file is on disk. Not a page itself.
"""

from __future__ import annotations

import base64
from pathlib import Path

import streamlit as st

from tl_core.errors import user_message
from tl_core.uploads import FolderUpload, IncompleteUpload

COMPONENT_KEY = "data_folder_component"
STATE = "hs_folder_upload"  # this session's upload: its token, last acknowledged event, the FolderUpload, messages

_CSS = """
.hs-folder-upload { border: 1px dashed rgba(49, 51, 63, 0.35); border-radius: 0.5rem; padding: 1rem;
  background: var(--st-secondary-background-color, #f4f1ee); font-family: var(--st-font, sans-serif); }
.pick { display: flex; gap: 0.75rem; align-items: center; flex-wrap: wrap; cursor: pointer; }
.pick input { position: absolute; width: 1px; height: 1px; opacity: 0; }
.pick:focus-within .button { outline: 2px solid var(--st-primary-color, #c8402a); outline-offset: 2px; }
.button { background: var(--st-primary-color, #c8402a); color: #fff; border-radius: 0.5rem;
  padding: 0.45rem 0.9rem; font-weight: 600; }
.hint { color: rgba(49, 51, 63, 0.75); font-size: 0.9rem; }
.bar { width: 100%; margin-top: 0.75rem; }
.status { margin-top: 0.5rem; font-size: 0.95rem; }
"""

_component = st.components.v2.component(
    "headstart_folder_upload", js=Path(__file__).with_suffix(".js").read_text(), css=_CSS
)


def _ranges(indices: list[int]) -> list[list[int]]:
    """[1, 2, 3, 7] -> [[1, 4], [7, 8]]: the files still needed, compact enough to send back on every rerun."""
    out: list[list[int]] = []
    for i in indices:
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


def _on_event() -> None:
    """The browser's latest event, handled before the fragment draws (a widget callback)."""
    result = st.session_state.get(COMPONENT_KEY)
    event = getattr(result, "event", None) or (result or {}).get("event")
    if isinstance(event, dict):
        handle_event(event, st.session_state.setdefault(STATE, {}))


def handle_event(event: dict, state: dict) -> None:
    """One event from the browser (announce, a batch, finish), handled once and acknowledged in `state["ack"]`.

    A resent event (its confirmation was lost or late) is only acknowledged again; an event of an older upload (the
    person picked another folder meanwhile) is ignored.
    """
    if event.get("kind") == "announce":
        state.clear()
        state.update(token=event.get("token"), ack=0)
    elif event.get("token") != state.get("token"):
        return
    elif event.get("seq", 0) <= state.get("ack", 0):
        return  # already handled: the browser sees the same ack again
    try:
        _handle(event, state)
    except Exception as exc:  # noqa: BLE001 - a bad upload is a sentence on the page, never a traceback
        state["error"] = f"The folder could not be received: {user_message(exc)}"
    state["ack"] = event.get("seq", 0)


def _handle(event: dict, state: dict) -> None:
    kind = event.get("kind")
    if kind == "announce":
        upload = FolderUpload.announce(event.get("names", []), event.get("sizes", []), event.get("modified", []))
        state.update(upload=upload, needed=_ranges(upload.needed()), unreadable=[])
        return
    upload: FolderUpload | None = state.get("upload")
    if upload is None:
        raise ValueError("the upload was not announced. Pick the folder again.")
    if kind == "batch":
        state["needed"] = []  # the browser has its list; no need to send it back on every rerun
        for item in event.get("files", []):
            upload.add(int(item["i"]), base64.b64decode(item["b64"], validate=True))
        for item in event.get("unreadable", []):
            state["unreadable"].append((upload.names[int(item["i"])], str(item.get("why", ""))))
    elif kind == "finish":
        try:
            state["folder"] = str(upload.finish())
        except IncompleteUpload as exc:
            state["error"] = str(exc)
            state["missing"] = exc.missing


@st.fragment  # a batch reruns the uploader alone, not the whole Data page
def folder_uploader(on_complete) -> None:
    """The uploader; `on_complete(folder: Path, label: str)` runs once the whole folder is on the server."""
    state = st.session_state.get(STATE, {})
    upload: FolderUpload | None = state.get("upload")
    data = {"token": state.get("token"), "ack": state.get("ack", 0), "needed": state.get("needed", [])}
    if upload is not None:
        data["expected"] = upload.expected
        data["status"] = f"Received {len(upload.arrived):,} of {upload.expected:,} files" + (
            ": all there." if state.get("folder") else "."
        )
    _component(data=data, key=COMPONENT_KEY, on_event_change=_on_event)
    if state.get("error"):
        st.error(state["error"], icon=":material/error:")
        if state.get("unreadable"):
            st.caption("The browser could not read these files:")
            st.dataframe(
                [{"file": n, "why": w} for n, w in state["unreadable"]], hide_index=True, key="data_unreadable"
            )
        if state.get("missing"):
            with st.expander(f"The {len(state['missing']):,} files that did not arrive"):
                st.dataframe([{"file": n} for n in state["missing"]], hide_index=True, key="data_missing")
        st.caption("A zip of the folder is another way in: choose *Upload a zip* above.")
    if state.get("folder") and not state.get("used"):
        state["used"] = True  # the token and ack stay, so the browser sees its 'finish' confirmed
        on_complete(Path(state["folder"]), upload.label)
        st.rerun()  # the whole page: it now shows the data set

"""The one Streamlit internal Headstart relies on: the switch out of 'pages folder' mode (pages/_common.py).

If a Streamlit upgrade renames or removes it, this test says so plainly, before users meet deep links that run a page
alone with every file of pages/ in the menu.
"""

from __future__ import annotations

import inspect


def test_streamlit_still_has_the_pages_folder_switch_that_headstart_flips():
    from streamlit.commands import navigation
    from streamlit.runtime import pages_manager

    manager = pages_manager.PagesManager
    upgrade = (
        "Streamlit changed how it detects the pages/ folder: pages/_common.leave_pages_folder_mode() no longer "
        "applies. Check that a first visit to a deep link (/train) on a fresh server still runs through app.py's "
        "navigation (tests/ui/test_browser.py does), and adapt or remove the workaround."
    )
    assert hasattr(manager, "uses_pages_directory"), upgrade
    assert "uses_pages_directory = False" in inspect.getsource(navigation.navigation), upgrade
    assert '/ "pages"' in inspect.getsource(manager.__init__), upgrade


def test_app_navigation_lists_every_page_once():
    from pathlib import Path

    from pages._common import PAGES

    repo = Path(__file__).resolve().parents[2]
    page_files = {p.as_posix() for p in (repo / "pages").glob("*.py") if not p.name.startswith("_")}
    assert {str(repo / spec.path) for spec in PAGES.values()} == page_files
    assert [spec.title for spec in PAGES.values()][:2] == ["Home", "1. Data"]

"""What the page runs in the browser: when a typed value is decided on, and how the page looks.

:data:`CLIENT_JS` decides a typed value after :data:`PAUSE_MS` without a keystroke (a preview: the decision
is shown, its warnings do not pop up), or at once on Enter or when the field is left (a commit). It does so
by clicking one of two hidden buttons bound to the page's single decide event, whose pending triggers
collapse into the last; text boxes have no event of their own, so typing ``240`` resolves once, not three
times, and never ``2`` or ``24`` as if they were meant.
"""

from __future__ import annotations

PAUSE_MS = 600
"""A pause in typing this long (ms) decides the value typed so far: longer than the gap between two
keystrokes of a person typing a number (~100-300 ms), short enough to feel immediate."""
PAUSE_RANGE_MS = (100, 10_000)
"""A slower typist opens the page as ``/?pause=1500``: any pause in this range (ms) replaces :data:`PAUSE_MS`."""

CLIENT_JS = (
    """
() => {
  const asked = Number(new URLSearchParams(window.location.search).get("pause"));
  const PAUSE_MS = asked >= {least} && asked <= {most} ? asked : {pause};
  let timer = null;
  let dirty = false;
  const press = (id) => {
    const button = document.getElementById(id);
    if (button) button.click();
  };
  const typed = (target) =>
    target instanceof Element && target.matches("input, textarea") && target.closest(".ac-typed") !== null;
  document.addEventListener("input", (event) => {
    if (!typed(event.target)) return;
    dirty = true;
    clearTimeout(timer);
    timer = setTimeout(() => { timer = null; press("resolve-typing"); }, PAUSE_MS);
  });
  const commit = (event) => {
    if (!typed(event.target) || !dirty) return;
    clearTimeout(timer);
    timer = null;
    dirty = false;
    press("resolve-commit");
  };
  document.addEventListener("focusout", commit);
  document.addEventListener("keydown", (event) => { if (event.key === "Enter") commit(event); });
}
""".replace("{pause}", str(PAUSE_MS))
    .replace("{least}", str(PAUSE_RANGE_MS[0]))
    .replace("{most}", str(PAUSE_RANGE_MS[1]))
)

CSS = """
.ac-title { font-size: 15px; color: #555; margin: 0; }
.ac-headline { margin: 2px 0; font-size: 22px; }
.ac-sub { margin: 0; color: #444; }
.ac-command { font-size: 13px; color: #444; overflow-wrap: anywhere; }
.ac-command code { font-size: 12px; }
.ac-status { margin: 4px 0; font-size: 15px; }
.ac-ok { color: #15803d; }
.ac-bad { color: #b91c1c; }
.ac-warn { color: #b45309; }
.ac-info { color: #1d4ed8; }
.ac-forced { color: #7c2d12; font-weight: bold; }
.ac-none { color: #666; margin: 2px 0; }
.ac-note-box { min-height: 0 !important; padding: 0 !important; }
div.block.ac-note-box:has(.prose:empty) { display: none !important; }
.ac-note { font-size: 12px; color: #444; margin: -4px 2px 6px; line-height: 1.35; }
.ac-note code { font-size: 11px; }
.ac-note.ac-problem, .ac-problem { color: #b91c1c; font-weight: 600; }
.ac-stale { color: #b45309; font-size: 13px; }
.ac-chart { font-family: monospace; font-size: 13px; }
.ac-row { display: flex; align-items: center; gap: 8px; margin: 3px 0; }
.ac-name { width: 100px; }
.ac-track { position: relative; flex: 1; height: 16px; background: #eee; border-radius: 3px; }
.ac-bar { height: 100%; background: #3b82f6; border-radius: 3px; }
.ac-bar.ac-over { background: #dc2626; }
.ac-budget { position: absolute; top: -3px; bottom: -3px; width: 2px; background: #dc2626; }
.ac-val { width: 130px; text-align: right; }
.ac-skip { color: #888; }
.ac-legend { color: #555; margin-top: 4px; }
.ac-refused { color: #b91c1c; font-weight: bold; border: 1px solid #b91c1c; padding: 6px; border-radius: 4px; }
.ac-forced-box { color: #7c2d12; border: 1px solid #7c2d12; padding: 6px; border-radius: 4px; }
.ac-progress .ac-row .ac-bar { background: #16a34a; }
.ac-progress .ac-row[data-state=running] .ac-bar { background: #3b82f6; }
.ac-players { display: flex; flex-wrap: wrap; gap: 8px; }
.ac-clip { margin: 0; }
.ac-clip figcaption { font-size: 12px; color: #444; }
#plan-chart table, #hardware table, #plan-table table, #overrides table { font-size: 12px; }
"""

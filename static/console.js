// Filters left empty, or at their default, stay out of the address the list pushes: a shorter
// link to share, read by the server the same way.
document.addEventListener("htmx:configRequest", (event) => {
  const data = event.detail.formData;
  const form = event.detail.elt.closest("form");
  if (event.detail.verb !== "get" || !data || !form) return;
  for (const key of [...new Set(data.keys())]) {
    const field = form.querySelector(`[name="${CSS.escape(key)}"]`);
    const fallback = field ? field.dataset.default : undefined;
    let kept = data.getAll(key).filter((v) => v !== "" && v !== fallback);
    const shown = field && (field.dataset.shown ?? field.defaultValue);
    if (field && field.dataset.exact && field.value === shown) {
      // A time still as the page showed it is sent as the link gave it (in UTC): the input
      // holds milliseconds at most, none once in the browser's zone, and the bound would move.
      kept = [field.dataset.exact];
    } else if (field && field.dataset.zone === "local") {
      kept = kept.map((v) => moveZone(v, false));
    }
    data.delete(key);
    kept.forEach((v) => data.append(key, v));
  }
});

// The "Times" switch: every <time data-fmt> the server wrote in UTC is shown in UTC or in the
// browser's time zone, as chosen (kept in this browser). Fractions of a second are the server's
// digits: a zone moves whole minutes.
const TZ_KEY = "console.times";

function pad(n, width = 2) {
  return String(n).padStart(width, "0");
}

function localDate(d) {
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function showTimes(root) {
  const local = localStorage.getItem(TZ_KEY) === "local";
  for (const el of root.querySelectorAll("time[data-fmt]")) {
    if (el.dataset.utc === undefined) el.dataset.utc = el.textContent;
    if (!local) {
      el.textContent = el.dataset.utc;
      continue;
    }
    const iso = el.getAttribute("datetime");
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) continue;
    const fraction = (iso.match(/\.(\d+)/) || [, ""])[1].padEnd(6, "0").slice(0, 6);
    const date = localDate(d);
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    let fmt = el.dataset.fmt;
    // A time of day shown alone is on the run's first day in UTC; in this zone the two may fall
    // on other days (a run started late in the evening): then its date is shown too.
    const since = el.dataset.since ? new Date(el.dataset.since) : null;
    if (fmt === "time-us" && since && localDate(since) !== date) fmt = "datetime-us";
    el.textContent =
      fmt === "datetime" ? `${date} ${time}` :
      fmt === "datetime-us" ? `${date} ${time}.${fraction}` :
      `${time}.${fraction}`;
  }
  showInputZones(local);
  const zone = zoneShown(local);
  for (const el of document.querySelectorAll(".tz-name")) el.textContent = zone;
  const toggle = document.getElementById("tz-toggle");
  if (toggle) {
    toggle.hidden = false;
    toggle.textContent = `Times: ${zone}`;
    toggle.title = local ? "show times in UTC" : "show times in this browser's time zone";
  }
}

function zoneShown(local) {
  return local ? Intl.DateTimeFormat().resolvedOptions().timeZone || "local" : "UTC";
}

// Time inputs (``<input type="datetime-local" data-zone>``): the server reads and writes their
// values in UTC, the address bar keeps UTC (a link means the same for everyone), and the input
// shows the zone the switch says. ``data-zone`` is the zone its value is in now.
const INPUT_TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?$/;

function inputTime(d, utc, withSeconds) {
  const get = (name) => d[`get${utc ? "UTC" : ""}${name}`]();
  const text =
    `${pad(get("FullYear"), 4)}-${pad(get("Month") + 1)}-${pad(get("Date"))}` +
    `T${pad(get("Hours"))}:${pad(get("Minutes"))}`;
  return withSeconds ? `${text}:${pad(get("Seconds"))}` : text;
}

function moveZone(value, toLocal) {
  const m = INPUT_TIME.exec(value);
  if (!m) return value; // empty or not a time: left for the server to refuse
  const [y, mo, d, h, mi, s] = m.slice(1, 7).map((v) => Number(v || 0));
  // Fractions of a second are dropped (the input has none); seconds are kept when given.
  const date = new Date(0);
  if (toLocal) {
    date.setUTCFullYear(y, mo - 1, d); // not Date.UTC(), which takes years 0-99 as 19xx
    date.setUTCHours(h, mi, s, 0);
  } else {
    date.setFullYear(y, mo - 1, d);
    date.setHours(h, mi, s, 0);
  }
  if (Number.isNaN(date.getTime())) return value;
  return inputTime(date, !toLocal, m[6] !== undefined);
}

function showInputZones(local) {
  for (const el of document.querySelectorAll("input[data-zone]")) {
    const want = local ? "local" : "utc";
    // What the page shows, as the browser keeps it: "00.500" is "00.5" once in the input.
    if (el.dataset.shown === undefined) el.dataset.shown = el.value;
    if (el.dataset.zone === want) continue;
    // A value the person typed is theirs: the link's exact time no longer stands for it.
    if (el.value !== (el.dataset.shown ?? el.defaultValue)) delete el.dataset.exact;
    el.value = moveZone(el.value, local);
    el.dataset.zone = want;
    el.dataset.shown = el.value; // as moved: a change of it is the person's (see above)
  }
}

document.addEventListener("DOMContentLoaded", () => {
  showTimes(document);
  const toggle = document.getElementById("tz-toggle");
  if (toggle) {
    toggle.addEventListener("click", () => {
      const local = localStorage.getItem(TZ_KEY) === "local";
      localStorage.setItem(TZ_KEY, local ? "utc" : "local");
      showTimes(document);
      // The switch's new label is not read out when it changes: the new setting is said.
      announce(`Times are now in ${zoneShown(!local)}`);
    });
  }
});
document.addEventListener("htmx:afterSwap", (event) => showTimes(event.detail.target));

// Results and history pages are swapped in place: say so to screen readers (the one live region
// of the page reads the new part's summary), show the old part as busy meanwhile, and keep the
// keyboard where it was. htmx puts focus back on an element of the same id; a control gone
// from the new part (the last page has no "Next") would leave it on the body, at the page's top.
document.addEventListener("htmx:beforeRequest", (event) => {
  const target = event.detail.target;
  if (target) target.setAttribute("aria-busy", "true");
});
document.addEventListener("htmx:afterRequest", (event) => {
  const target = event.detail.target;
  if (target) target.removeAttribute("aria-busy");
});

// Enter in a filter's text field fires three triggers at once (the field's "search", the
// form's "change" and "submit"), each asking for the same list: hx-sync aborted the first two
// after the server had begun them, and htmx logged each abort as an error. A request for the
// filters as they are, to a target a request for them is already on its way to, is not sent.
const onTheWay = new WeakMap(); // target -> {filters, xhr} of the request on its way to it

function filtersOf(elt) {
  const form = elt.closest("form");
  return form ? new URLSearchParams(new FormData(form)).toString() : null;
}

document.addEventListener("htmx:confirm", (event) => {
  const { elt, target, verb, path } = event.detail;
  const filters = filtersOf(elt);
  const sent = target && onTheWay.get(target);
  if (verb === "get" && filters !== null && sent && sent.filters === `${path}?${filters}`) {
    event.preventDefault();
  }
});
document.addEventListener("htmx:beforeRequest", (event) => {
  const { elt, target, xhr, requestConfig } = event.detail;
  const filters = filtersOf(elt);
  if (target && filters !== null) {
    onTheWay.set(target, { filters: `${requestConfig.path}?${filters}`, xhr });
  }
});
document.addEventListener("htmx:afterRequest", (event) => {
  const { target, xhr } = event.detail;
  // Not when an older request ends (aborted for a newer one): the newer is still on its way.
  if (target && onTheWay.get(target)?.xhr === xhr) onTheWay.delete(target);
});
// Says ``text`` in the page's live region, cleared first: a new text in a cleared region is
// read even when it is the same as the last one.
function announce(text) {
  const live = document.getElementById("announce");
  if (!live) return;
  live.textContent = "";
  window.setTimeout(() => { live.textContent = text; }, 50);
}

document.addEventListener("htmx:afterSettle", (event) => {
  const target = event.detail.target;
  // Every summary of the new part: a list's count, and which of its rows are on this page.
  const summary = [...target.querySelectorAll("[data-announce]")]
    .map((el) => el.textContent.replace(/\s+/g, " ").trim())
    .join(", ");
  if (summary) announce(summary);
  if (document.activeElement === document.body || !document.activeElement) {
    const heading = target.querySelector("h2") || target;
    if (!heading.hasAttribute("tabindex")) heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
  }
});

// Copy buttons (``data-copy``: the id of the element whose text they copy; ``data-copy-value``:
// the exact value, where the element shows it with characters written out), hidden until this
// script shows them. The clipboard API exists only on HTTPS and localhost, and may be refused:
// then the text is selected, for the person to copy with the keyboard (the exact value, in a
// field of its own, when the element shows it otherwise).
function selectText(el) {
  const range = document.createRange();
  range.selectNodeContents(el);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

async function copyText(text) {
  if (!window.isSecureContext || !navigator.clipboard) return false;
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false;
  }
}

function sayDone(button, said) {
  announce(said);
  button.textContent = said;
  window.clearTimeout(button.copyTimer);
  button.copyTimer = window.setTimeout(() => { button.textContent = "Copy"; }, 4000);
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) button.hidden = false;
});
function selectValue(button, value) {
  let field = button.nextElementSibling;
  if (!field || !field.classList.contains("copy-value")) {
    field = document.createElement("input");
    field.className = "copy-value mono";
    field.readOnly = true;
    field.setAttribute("aria-label", "The exact value");
    button.after(field);
  }
  field.value = value;
  field.focus();
  field.select();
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  const source = button && document.getElementById(button.dataset.copy);
  if (!source) return;
  const value = button.dataset.copyValue ?? source.textContent;
  if (await copyText(value)) {
    sayDone(button, "Copied");
    return;
  }
  if (value === source.textContent) selectText(source);
  else selectValue(button, value);
  sayDone(button, "Selected: press Ctrl+C (⌘C) to copy");
});

// The timeline's bars and markers are links whose details are a tooltip, shown on hover only:
// for the one the keyboard is on, the same words are written under the drawing.
function timelineReadout(event, focused) {
  const link = event.target.closest && event.target.closest("svg.timeline a");
  const readout = document.getElementById("timeline-readout");
  if (!link || !readout) return;
  const title = link.querySelector("title");
  readout.textContent = focused && title ? title.textContent : "";
}
document.addEventListener("focusin", (event) => timelineReadout(event, true));
document.addEventListener("focusout", (event) => timelineReadout(event, false));

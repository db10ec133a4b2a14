// sekisho console: a little progressive enhancement. Every page works
// without this file; with it, a form cannot be sent twice by a double
// click, "go back" goes back, the one-time password can be copied, and
// today's figures refresh themselves.
'use strict';

document.addEventListener('submit', (event) => {
  const form = event.target;
  if (form.dataset.sent === '1') {
    event.preventDefault();
    return;
  }
  form.dataset.sent = '1';
  // After the browser has collected the form, so nothing is left out.
  setTimeout(() => form.querySelectorAll('button[type=submit]').forEach((b) => { b.disabled = true; }), 0);
});

document.addEventListener('click', (event) => {
  const back = event.target.closest('[data-back]');
  if (back && history.length > 1) {
    event.preventDefault();
    history.back();
  }
  const copy = event.target.closest('[data-copy]');
  if (copy && navigator.clipboard) {
    const text = document.getElementById(copy.dataset.copy)?.textContent ?? '';
    navigator.clipboard.writeText(text.trim()).then(() => { copy.textContent = copy.dataset.done || copy.textContent; });
  }
});

// Today's view: the figures marked data-live come from /console/glance.json.
const live = document.querySelectorAll('[data-live]');
if (live.length > 0) {
  const refresh = async () => {
    try {
      const r = await fetch('/console/glance.json', { credentials: 'same-origin', cache: 'no-store' });
      if (!r.ok) return;
      const figures = await r.json();
      live.forEach((el) => {
        const v = figures[el.dataset.live];
        if (v !== undefined && v !== null) el.textContent = String(v);
      });
    } catch (e) { /* the page keeps its last figures */ }
  };
  setInterval(refresh, 15000);
}

// A page restored by the back button can be sent again.
window.addEventListener('pageshow', () => {
  document.querySelectorAll('form').forEach((f) => { delete f.dataset.sent; });
  document.querySelectorAll('button[type=submit]').forEach((b) => { b.disabled = false; });
});

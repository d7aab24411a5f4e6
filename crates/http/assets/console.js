// tenure's web console: follows /v1/server/ha/events and re-renders the page's main part
// (/ui/main, rendered by the node) when something changes; posts the admin forms to the API.
// URLs are built on location.origin: a page opened as http://user:pass@host/ must not put the
// credentials into fetch() URLs (browsers refuse them there).
(function () {
  'use strict';
  var origin = window.location.origin;
  var main = document.getElementById('main');
  var live = document.getElementById('live');
  var notice = document.getElementById('notice');
  var busy = false;
  var again = false;

  function setLive(text, ok) {
    live.hidden = false;
    live.textContent = text;
    live.className = 'live ' + (ok ? 'on' : 'off');
  }

  function say(text, ok) {
    notice.hidden = false;
    notice.textContent = text;
    notice.className = 'notice ' + (ok ? 'ok' : 'bad');
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(origin + '/ui/main', { credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) {
        if (!r.ok) { throw new Error('HTTP ' + r.status); }
        return r.text();
      })
      .then(function (html) {
        main.innerHTML = html;
        bind();
        var st = document.getElementById('state');
        if (st) { document.title = st.textContent + ' · ' + document.title.split(' · ').slice(1).join(' · '); }
      })
      .catch(function (e) { setLive('update failed: ' + e.message, false); })
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  function message(text) {
    try {
      var v = JSON.parse(text);
      if (typeof v === 'string') { return 'previous state ' + v; }
      if (typeof v === 'number') { return 'previous value ' + v; }
      if (v && v.message) { return v.message; }
    } catch (e) { /* not JSON */ }
    return text.slice(0, 200);
  }

  function submit(ev) {
    ev.preventDefault();
    var form = ev.currentTarget;
    var question = form.getAttribute('data-confirm');
    if (question && !window.confirm(question)) { return; }
    var body = new URLSearchParams(new FormData(form));
    var what = form.getAttribute('data-api');
    fetch(origin + form.getAttribute('action'), {
      method: 'POST',
      body: body,
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' }
    }).then(function (r) {
      return r.text().then(function (t) {
        say(r.ok ? what + ': done (' + message(t) + ')' : what + ' refused (HTTP ' + r.status + '): ' + message(t), r.ok);
        refresh();
      });
    }).catch(function (e) { say(what + ' failed: ' + e.message, false); });
  }

  function bind() {
    var forms = document.querySelectorAll('form[data-api]');
    for (var i = 0; i < forms.length; i++) { forms[i].addEventListener('submit', submit); }
  }

  bind();
  if (!window.EventSource) { setLive('static (no EventSource)', false); return; }
  var es = new EventSource(origin + '/v1/server/ha/events');
  es.onopen = function () { setLive('live', true); };
  es.onerror = function () { setLive('reconnecting…', false); };
  ['hello', 'state', 'master', 'members'].forEach(function (name) {
    es.addEventListener(name, function () { setLive('live', true); refresh(); });
  });
  // Heartbeat ages and deadlines move without events.
  window.setInterval(refresh, 5000);
}());

// A page over the backend's /getStream: documents per minute of a range as a bar
// chart, and with "follow", the frames that arrive after it, as they are indexed.
// Plain JavaScript, no build step: copy it and change what you need.
'use strict';

const $ = id => document.getElementById(id);
const form = $('query'), startInput = $('start'), endInput = $('end'),
  followInput = $('follow'), apiInput = $('api'), keyInput = $('key');

// The API key is kept in sessionStorage: it is gone when the tab closes, and it is
// never put in the URL, where history, proxies and access logs would keep it.
keyInput.value = sessionStorage.getItem('apiKey') ?? '';
keyInput.addEventListener('input', () => sessionStorage.setItem('apiKey', keyInput.value));

// The range, follow and API base URL can come from the page's own URL (a shared
// link); without them the range is the last hour.
const params = new URLSearchParams(location.search);
startInput.value = toInput(params.get('start') ?? Math.floor(Date.now() / 60e3) * 60e3 - 3600e3);
endInput.value = params.has('end') ? toInput(params.get('end')) : '';
followInput.checked = params.get('follow') === 'true';
apiInput.value = params.get('api') ?? '';

let running = null; // the AbortController of the stream on show
form.addEventListener('submit', event => {
  event.preventDefault();
  show();
});
$('stop').addEventListener('click', () => {
  running?.abort();
  setPhase('stopped');
  say('Stopped. Show starts again.');
});

function show() {
  running?.abort();
  const from = new Date(startInput.value); // datetime-local: read as local time
  const follow = followInput.checked;
  const to = endInput.value ? new Date(endInput.value) : follow ? null : new Date();
  if (isNaN(from)) return say('Pick the start of the range.', true);
  if (to && to < from) return say('From is after To.', true);

  // The API takes RFC 3339 dates; toISOString writes them in UTC.
  const query = new URLSearchParams({start_date: from.toISOString()});
  if (to) query.set('end_date', to.toISOString());
  if (follow) query.set('follow', 'true');
  // Only what the page shows: less to send and to parse.
  query.set('fields', '@timestamp,camera_id,frame,labels');
  // Relative by default: the page's own origin, also behind a proxy that serves
  // the API under a path. Another origin answers only if its CORS_ALLOWED_ORIGINS
  // lists this page's origin.
  const base = apiInput.value.trim();
  const url = new URL('getStream?' + query, base ? base.replace(/\/?$/, '/') : document.baseURI);

  const link = new URLSearchParams({start: from.toISOString()});
  if (to && endInput.value) link.set('end', to.toISOString());
  if (follow) link.set('follow', 'true');
  if (base) link.set('api', base);
  history.replaceState(null, '', '?' + link);

  const run = running = new AbortController();
  view.reset(from, to);
  setPhase('history');
  say(follow ? 'Loading the range, then following it…' : 'Loading the range…');
  $('stop').disabled = false;
  stream(url, run.signal).finally(() => { if (running === run) $('stop').disabled = true; });
}

// stream shows the Server-Sent Events of url until the range ends or signal aborts.
//
// It uses fetch rather than EventSource because EventSource cannot send an
// Authorization header. It resumes as EventSource would: every document event
// carries an id (an opaque cursor); after a dropped connection the request is
// sent again with the last id received in Last-Event-ID, and the backend goes on
// right after that document, with nothing skipped or repeated.
async function stream(url, signal) {
  let lastId = '', live = false, ended = false, problem = '', backoff = 1000;
  const on = {
    message: event => view.add(JSON.parse(event.data)),
    live: () => {
      live = true;
      setPhase('live');
      say('Following: new frames appear as they are indexed.');
    },
    end: () => { ended = true; },
    error: event => { problem = JSON.parse(event.data).error.message; },
  };
  while (!signal.aborted) {
    const headers = {Accept: 'text/event-stream'};
    const key = keyInput.value.trim();
    if (key) headers.Authorization = 'Bearer ' + key;
    if (lastId) headers['Last-Event-ID'] = lastId;
    let wait = backoff, connected = false;
    try {
      const res = await fetch(url, {headers, signal, cache: 'no-store'});
      if (!res.ok) {
        // Before a stream begins, errors are JSON: {"error":{"code","message"}}.
        const body = await res.json().catch(() => null);
        problem = body?.error?.message ?? `${res.status} ${res.statusText}`;
        // Only a busy backend (429, 503) says when to come back; any other
        // refusal would be the same next time.
        const retryAfter = Number(res.headers.get('Retry-After'));
        if (!retryAfter) return fail(problem);
        wait = retryAfter * 1000;
      } else {
        if (lastId) say('Reconnected: the stream goes on after the last document received.');
        else view.reset(); // nothing to resume from: the range starts over
        setPhase(live ? 'live' : 'history');
        connected = true;
        backoff = wait = 1000; // it was up: the next break is a new one
        await readEvents(res.body, event => {
          if (signal.aborted) return;
          // Keep-alives carry an id too, without data: the position so far.
          if ('id' in event) lastId = event.id;
          if ('data' in event) on[event.event ?? 'message']?.(event);
        });
        if (ended) {
          view.draw(); // now, not at the next frame: the view and the status agree
          setPhase('complete');
          return say(`All ${view.count} documents of the range.`);
        }
        problem ||= 'the stream broke off';
      }
    } catch (err) {
      if (signal.aborted) return;
      // fetch cannot tell a network failure from a cross-origin API whose
      // CORS_ALLOWED_ORIGINS does not list this page's origin.
      problem ||= connected ? `the stream broke off (${err.message})` : `no answer from ${url.origin} (${err.message})`;
    }
    setPhase('reconnecting');
    say(`${problem}; trying again in ${Math.round(wait / 1000)} s…`, true);
    await sleep(wait, signal);
    backoff = Math.min(backoff * 2, 30000);
    problem = '';
  }

  function fail(message) {
    setPhase('failed');
    say(message, true);
  }
}

// readEvents calls onEvent for each event of a text/event-stream body until the
// body ends. It reads the part of the format the API sends: the fields event,
// data and id, and comment lines (":…"), which keep an idle stream open.
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let partial = '', event = {};
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    const lines = (partial + value).split('\n');
    partial = lines.pop(); // the start of a line still on its way
    for (const line of lines.map(l => l.replace(/\r$/, ''))) {
      if (line === '') { // a blank line ends an event
        if (Object.keys(event).length) onEvent(event);
        event = {};
      } else if (!line.startsWith(':')) {
        const [, field, text] = line.match(/^([^:]*):? ?(.*)$/);
        if (field === 'data') event.data = 'data' in event ? event.data + '\n' + text : text;
        else if (field === 'event' || field === 'id') event[field] = text;
      }
    }
  }
}

// view holds what the page shows: the count, the documents per minute, and the
// latest frame of each camera; never the documents themselves, so that a long
// follow takes no more memory than a short one.
const view = {
  reset(from = this.from, to = this.to) {
    Object.assign(this, {from, to, count: 0, perMinute: new Map(), lastMinute: 0, latest: new Map()});
    this.redraw();
  },
  add(doc) {
    this.count++;
    const t = Date.parse(doc['@timestamp']);
    const minute = Math.floor((t - this.from) / 60e3);
    this.perMinute.set(minute, (this.perMinute.get(minute) ?? 0) + 1);
    this.lastMinute = Math.max(this.lastMinute, minute);
    // Live documents come in the order they were indexed, not by time: keep the
    // newest by @timestamp, not the last to arrive.
    const camera = doc.camera_id ?? '(none)';
    if (!(Date.parse(this.latest.get(camera)?.['@timestamp']) > t)) this.latest.set(camera, doc);
    this.redraw();
  },
  // redraw draws at most once per frame, however many documents arrived.
  redraw() {
    if (!this.pending) this.pending = requestAnimationFrame(() => { this.pending = 0; this.draw(); });
  },
  draw() {
    $('count').value = this.count;
    drawChart(this);
    drawCameras(this.latest);
  },
};

function drawChart({from, to, perMinute, lastMinute}) {
  // Open-ended, the chart reaches the newest document, and spans an hour at least.
  const span = Math.max(1, to ? Math.ceil((to - from) / 60e3) : Math.max(60, lastMinute + 1));
  const minutes = Math.ceil(span / 720); // per bar: at most 720 bars
  const bars = new Array(Math.ceil(span / minutes)).fill(0);
  for (const [minute, n] of perMinute) bars[Math.floor(minute / minutes)] += n;
  const top = Math.max(...bars);

  const svg = $('chart');
  svg.setAttribute('viewBox', `0 0 ${bars.length} 100`);
  svg.replaceChildren();
  bars.forEach((n, i) => {
    if (!n) return;
    const rect = document.createElementNS('http://www.w3.org/2000/svg', 'rect');
    const h = 100 * n / top;
    Object.entries({x: i + 0.1, y: 100 - h, width: 0.8, height: h}).forEach(([k, v]) => rect.setAttribute(k, v));
    const title = document.createElementNS('http://www.w3.org/2000/svg', 'title');
    title.textContent = `${new Date(from.getTime() + i * minutes * 60e3).toLocaleString()}: ${n}`;
    rect.append(title);
    svg.append(rect);
  });
  $('chart-from').textContent = from.toLocaleString();
  $('chart-scale').textContent = `highest bar: ${top} per ${minutes === 1 ? 'minute' : minutes + ' minutes'}`;
  $('chart-to').textContent = new Date(from.getTime() + span * 60e3).toLocaleString();
}

function drawCameras(latest) {
  // Documents are data from outside: only ever textContent, never innerHTML.
  const rows = [...latest.keys()].sort().map(camera => {
    const doc = latest.get(camera);
    const tr = document.createElement('tr');
    const labels = (doc.labels ?? []).map(l => `${l.label} ${Math.round(l.confidence * 100)}%`).join(', ');
    for (const text of [camera, new Date(doc['@timestamp']).toLocaleString(), doc.frame ?? '', labels]) {
      tr.insertCell().textContent = text;
    }
    tr.cells[1].title = doc['@timestamp'];
    return tr;
  });
  $('cameras').replaceChildren(...rows);
}

function setPhase(phase) {
  $('phase').textContent = phase;
  document.body.dataset.phase = phase;
}

function say(text, isProblem = false) {
  $('status').textContent = text;
  $('status').classList.toggle('problem', isProblem);
}

// toInput writes a date (a string or milliseconds) as a datetime-local input
// wants it: local time, to the second.
function toInput(date) {
  const d = new Date(date);
  if (isNaN(d)) return '';
  return new Date(d - d.getTimezoneOffset() * 60e3).toISOString().slice(0, 19);
}

function sleep(ms, signal) {
  return new Promise(resolve => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, {once: true});
  });
}

// A link that names a range shows it at once (last: show needs all of the above).
if (params.has('start')) show();

// A page over the backend's API: how many documents each stretch of a range holds
// (one /getCounts request, whether the range is an hour or a week), the newest of
// them (a page of /getStream at a time), and with "follow", the frames that arrive
// as they are indexed. It never downloads the whole range.
// Plain JavaScript, no build step: copy it and change what you need.
'use strict';

const $ = id => document.getElementById(id);
const form = $('query'), startInput = $('start'), endInput = $('end'), qInput = $('q'),
  followInput = $('follow'), apiInput = $('api'), keyInput = $('key');

const pageSize = 50; // documents in the table, and per "More"
const fields = '@timestamp,camera_id,frame,labels'; // only what the page shows
// getCounts has no follow mode: while following, the page asks it again this
// often (ms), and the newest bars grow.
const pollEvery = 5000;

// The API key is kept in sessionStorage: it is gone when the tab closes, and it is
// never put in the URL, where history, proxies and access logs would keep it.
keyInput.value = sessionStorage.getItem('apiKey') ?? '';
keyInput.addEventListener('input', () => sessionStorage.setItem('apiKey', keyInput.value));

// The range, filter, follow and API base URL come from the page's own URL (a
// shared link, or Back after narrowing); without them the range is the last hour.
function readLink() {
  const params = new URLSearchParams(location.search);
  startInput.value = toInput(params.get('start') ?? Math.floor(Date.now() / 60e3) * 60e3 - 3600e3);
  endInput.value = params.has('end') ? toInput(params.get('end')) : '';
  qInput.value = params.get('q') ?? '';
  followInput.checked = params.get('follow') === 'true';
  apiInput.value = params.get('api') ?? '';
  endInput.disabled = followInput.checked;
  return params;
}
const params = readLink();

let running = null; // the AbortController of every request for the view on show
form.addEventListener('submit', event => {
  event.preventDefault();
  show();
});
$('stop').addEventListener('click', () => {
  running?.abort();
  $('stop').disabled = true;
  setPhase('stopped');
  say('Stopped. Show starts again.');
});
// Following, the range ends now and moves on with the clock: To has no say.
followInput.addEventListener('change', () => { endInput.disabled = followInput.checked; });
addEventListener('popstate', () => { readLink(); show(); });

function show(how = 'replaceState') {
  running?.abort();
  const from = new Date(startInput.value); // datetime-local: read as local time
  const follow = followInput.checked;
  const end = endInput.value && !follow ? new Date(endInput.value) : null;
  if (isNaN(from)) return say('Pick the start of the range.', true);
  if (end && end < from) return say('From is after To.', true);
  // The end is fixed once, for the counts and the documents alike: the table's
  // "More" goes on with a cursor that holds the same end_date.
  const range = {from, to: end ?? new Date(), q: qInput.value.trim()};

  const link = new URLSearchParams({start: from.toISOString()});
  if (end) link.set('end', end.toISOString());
  if (range.q) link.set('q', range.q);
  if (follow) link.set('follow', 'true');
  if (apiInput.value.trim()) link.set('api', apiInput.value.trim());
  history[how](null, '', '?' + link);

  const run = running = new AbortController();
  chart.reset(range);
  table.reset(range);
  cameras.reset(follow);
  $('q-problem').textContent = '';
  $('stop').disabled = false;
  setPhase('loading');
  say('Counting…');
  Promise.all([chart.load(range, run.signal), table.load(run.signal)]).then(() => {
    if (!follow) {
      $('stop').disabled = true;
      setPhase('complete');
      return say(summary());
    }
    say('Counting done; asking for new frames…');
    return Promise.all([followFrames(range, run.signal), pollCounts(range, run.signal)]);
  }).catch(err => {
    if (run.signal.aborted) return;
    run.abort(); // the other requests of this view would only say the same
    $('stop').disabled = true;
    setPhase('failed');
    say(err.message, true);
    if (err.code === 'invalid_query') {
      // Its message names the character at fault, next to the box it is in.
      $('q-problem').textContent = err.message;
      say('The filter is not valid: nothing was asked for.', true);
    }
    if (err.status === 401 || err.status === 403) $('connection').open = true;
  });
}

// narrow shows the buckets first to last of the chart as the range, as a new
// entry of the history: Back returns to the wider range.
function narrow(first, last) {
  const {range, answer: {buckets}} = chart;
  const from = new Date(Math.max(range.from, Date.parse(buckets[first].start)));
  // The last bucket ends where the range does; with follow that is now, to the
  // millisecond, and the inputs hold whole seconds: round up, not down.
  const to = last + 1 < buckets.length ? new Date(buckets[last + 1].start) : new Date(Math.ceil(range.to / 1e3) * 1e3);
  startInput.value = toInput(from);
  endInput.value = toInput(to);
  followInput.checked = endInput.disabled = false; // a narrowed range has an end
  show('pushState');
}

// chart draws the counts of a range as bars, one per bucket of getCounts.
const chart = {
  reset(range) {
    this.range = range;
    this.answer = null;
    $('bars').replaceChildren();
    for (const id of ['count', 'interval', 'chart-from', 'chart-scale', 'chart-to']) $(id).textContent = '';
  },
  async load(range, signal) {
    // About one bar per 5 pixels: getCounts picks a round interval that gives at
    // most that many buckets, whatever the length of the range.
    const buckets = Math.max(20, Math.min(200, Math.floor($('chart').clientWidth / 5)));
    const query = {start_date: range.from.toISOString(), end_date: range.to.toISOString(), interval: 'auto', buckets};
    if (range.q) query.q = range.q;
    const answer = await retrying(signal, async () => (await call(api('getCounts', query), 'application/json', signal)).json());
    if (signal.aborted) return;
    this.range = range;
    this.answer = answer;
    this.draw();
  },
  draw() {
    const {range, answer: {buckets, total, interval, unknown_fields: unknown}} = this;
    const top = Math.max(1, ...buckets.map(b => b.count));
    $('chart').setAttribute('viewBox', `0 0 ${buckets.length} 100`);
    $('bars').replaceChildren(...buckets.flatMap((b, i) => b.count ? [bar(i, b.count / top, `${when(b.start)}: ${b.count}`)] : []));
    $('count').value = total;
    $('interval').textContent = `· a bar per ${interval}`;
    $('chart-from').textContent = range.from.toLocaleString();
    $('chart-scale').textContent = `highest bar: ${top}`;
    $('chart-to').textContent = range.to.toLocaleString();
    // As in Kibana, a field the documents do not have matches nothing: a typo
    // would otherwise look like an empty range.
    $('q-problem').textContent = (unknown ?? []).map(f => `no field ${f}: it matches nothing.`).join(' ');
  },
};

function bar(i, height, title) {
  const rect = document.createElementNS('http://www.w3.org/2000/svg', 'rect');
  const h = 100 * height;
  Object.entries({x: i + 0.1, y: 100 - h, width: 0.8, height: h, tabindex: 0, 'data-bucket': i})
    .forEach(([k, v]) => rect.setAttribute(k, v));
  const t = document.createElementNS('http://www.w3.org/2000/svg', 'title');
  t.textContent = title;
  rect.append(t);
  return rect;
}

// Pressing on a bar and letting go narrows the range to its bucket; dragging
// across bars narrows it to the buckets dragged over. Enter on a bar that has the
// focus does what a click does.
{
  const svg = $('chart'), brush = $('brush');
  let first = null; // the bucket the drag began on
  const bucketAt = event => {
    const box = svg.getBoundingClientRect(), n = chart.answer.buckets.length;
    return Math.min(n - 1, Math.max(0, Math.floor((event.clientX - box.left) / box.width * n)));
  };
  const mark = (a, b) => {
    brush.setAttribute('x', Math.min(a, b));
    brush.setAttribute('width', Math.abs(a - b) + 1);
    brush.setAttribute('visibility', 'visible');
  };
  svg.addEventListener('pointerdown', event => {
    if (!chart.answer || event.button !== 0) return;
    first = bucketAt(event);
    svg.setPointerCapture(event.pointerId);
    mark(first, first);
  });
  svg.addEventListener('pointermove', event => { if (first !== null) mark(first, bucketAt(event)); });
  svg.addEventListener('pointerup', event => {
    if (first === null) return;
    const last = bucketAt(event);
    brush.setAttribute('visibility', 'hidden');
    narrow(Math.min(first, last), Math.max(first, last));
    first = null;
  });
  svg.addEventListener('pointercancel', () => { first = null; brush.setAttribute('visibility', 'hidden'); });
  svg.addEventListener('keydown', event => {
    const i = event.target.dataset?.bucket;
    if (i !== undefined && (event.key === 'Enter' || event.key === ' ')) {
      event.preventDefault();
      narrow(Number(i), Number(i));
    }
  });
}

// table lists the newest documents of the range, pageSize at a time: "More"
// fetches the next page, after the last document shown.
const table = {
  reset(range) {
    Object.assign(this, {range, after: '', count: 0});
    $('documents').replaceChildren();
    $('more').hidden = true;
  },
  async load(signal) {
    // after is not part of the request the cursor is tied to, nor is limit: the
    // next page is the same request, going on after the last document shown.
    const query = {start_date: this.range.from.toISOString(), end_date: this.range.to.toISOString(),
      order: 'desc', limit: pageSize, fields};
    if (this.range.q) query.q = this.range.q;
    if (this.after) query.after = this.after;
    let received = 0;
    await stream(api('getStream', query), signal, {
      doc: (doc, id) => {
        received++;
        this.count++;
        this.after = id;
        $('documents').append(row([when(doc['@timestamp']), doc.camera_id ?? '', doc.frame ?? '', labels(doc)], doc['@timestamp']));
        cameras.add(doc);
      },
    });
    // A short page was the last one; a full one may have been, which the next
    // "More" finds out.
    $('more').hidden = received < pageSize;
  },
};
$('more').addEventListener('click', async () => {
  const run = running, button = $('more');
  button.disabled = true;
  try {
    await table.load(run.signal);
    say(summary());
  } catch (err) {
    say(run.signal.aborted ? 'Stopped. Show starts again.' : err.message, true);
  } finally {
    button.disabled = false;
  }
});

// cameras holds the latest frame of each camera while the page follows: a long
// follow takes no more memory than a short one.
const cameras = {
  reset(follow) {
    this.latest = new Map();
    $('following').hidden = !follow;
    $('cameras').replaceChildren();
  },
  add(doc) {
    // Live documents come in the order they were indexed, not by time: keep the
    // newest by @timestamp, not the last to arrive.
    const camera = doc.camera_id ?? '(none)', t = Date.parse(doc['@timestamp']);
    if (Date.parse(this.latest.get(camera)?.['@timestamp']) >= t) return;
    this.latest.set(camera, doc);
    // At most once per frame, however many documents arrived.
    this.pending ||= requestAnimationFrame(() => { this.pending = 0; this.draw(); });
  },
  draw() {
    $('cameras').replaceChildren(...[...this.latest.keys()].sort().map(camera => {
      const doc = this.latest.get(camera);
      return row([camera, when(doc['@timestamp']), doc.frame ?? '', labels(doc)], doc['@timestamp']);
    }));
  },
};

// followFrames shows the frames indexed from the end of the counted range on:
// start_date is that end, so what the table and chart hold is not sent again.
async function followFrames(range, signal) {
  const query = {start_date: range.to.toISOString(), follow: 'true', fields};
  if (range.q) query.q = range.q;
  let live = false;
  await stream(api('getStream', query), signal, {
    doc: doc => cameras.add(doc),
    live: () => { live = true; following(); },
    resumed: () => {
      setPhase(live ? 'live' : 'loading');
      say('Reconnected: the stream goes on after the last document received.');
    },
  });
}

function following() {
  setPhase('live');
  say('Following: new frames appear as they are indexed, and the bars grow.');
}

// pollCounts asks for the counts again every few seconds, up to now: getCounts
// has no follow mode, so the page polls, and the current bucket grows.
async function pollCounts(range, signal) {
  for (;;) {
    await sleep(pollEvery, signal);
    if (signal.aborted) return;
    const now = {...range, to: new Date()};
    await chart.load(now, signal);
    if (document.body.dataset.phase === 'retrying') following(); // a refusal has passed
  }
}

// stream calls on.doc for each document of the Server-Sent Events of url, until
// the stream ends (a follow never does) or signal aborts.
//
// It uses fetch rather than EventSource because EventSource cannot send an
// Authorization header. It resumes as EventSource would: every document event
// carries an id (an opaque cursor); after a dropped connection the request is
// sent again with the last id received in Last-Event-ID, and the backend goes on
// right after that document, with nothing skipped or repeated.
async function stream(url, signal, on) {
  let lastId = '';
  await retrying(signal, async connected => {
    const res = await call(url, 'text/event-stream', signal, lastId);
    if (lastId) on.resumed?.();
    connected();
    let ended = false, problem = 'the stream broke off';
    try {
      await readEvents(res.body, event => {
        if (signal.aborted) return;
        // Keep-alives carry an id too, without data: the position so far.
        if ('id' in event) lastId = event.id;
        if (!('data' in event)) return;
        const data = JSON.parse(event.data);
        switch (event.event ?? 'message') {
          case 'message': return on.doc(data, event.id);
          case 'live': return on.live?.();
          case 'end': ended = true; return;
          case 'error': problem = data.error.message;
        }
      });
    } catch (err) {
      if (signal.aborted) throw err;
      problem = `the stream broke off (${err.message})`;
    }
    if (!ended && !signal.aborted) throw new Error(problem); // no status: tried again
  });
}

// call fetches url with the API key, and turns a refusal into an Error that says
// what happened in words: the status line shows its message.
async function call(url, accept, signal, lastId = '') {
  const headers = {Accept: accept};
  const key = keyInput.value.trim();
  if (key) headers.Authorization = 'Bearer ' + key;
  if (lastId) headers['Last-Event-ID'] = lastId;
  let res;
  try {
    res = await fetch(url, {headers, signal, cache: 'no-store'});
  } catch (err) {
    if (signal.aborted) throw err;
    // fetch cannot tell a network failure from a cross-origin API whose
    // CORS_ALLOWED_ORIGINS does not list this page's origin.
    throw new Error(`no answer from ${url.origin} (${err.message})`);
  }
  if (res.ok) return res;
  // Refusals are JSON: {"error":{"code","param","message"}}; a proxy's may not be.
  const error = (await res.json().catch(() => null))?.error ?? {};
  let message = error.message ?? `${res.status} ${res.statusText}`;
  if (res.status === 401 || res.status === 403) message = `The API refused the key (see Connection): ${message}`;
  if (res.status === 429) message = 'The API refused: too many requests from this browser (its rate limit)';
  throw Object.assign(new Error(message), {status: res.status, code: error.code,
    retryAfter: Number(res.headers.get('Retry-After')) || 0});
}

// retrying runs attempt until it succeeds, or fails in a way that waiting would not
// change. A refusal is final, except from a busy API (429, 503), which says in
// Retry-After when to come back; a network failure or a broken stream is tried
// again, waiting longer each time, until the attempt says it is connected.
async function retrying(signal, attempt) {
  let backoff = 1000;
  for (;;) {
    try {
      return await attempt(() => { backoff = 1000; });
    } catch (err) {
      if (signal.aborted || (err.status && !err.retryAfter)) throw err;
      const wait = err.retryAfter ? err.retryAfter * 1000 : backoff;
      backoff = Math.min(backoff * 2, 30000);
      setPhase('retrying');
      say(`${err.message}; trying again in ${Math.round(wait / 1000)} s…`, true);
      await sleep(wait, signal);
      if (signal.aborted) throw err;
    }
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

// api is the URL of an endpoint with the given parameters. Relative by default:
// the page's own origin, also behind a proxy that serves the API under a path.
// Another origin answers only if its CORS_ALLOWED_ORIGINS lists this page's origin.
function api(endpoint, query) {
  const base = apiInput.value.trim();
  return new URL(endpoint + '?' + new URLSearchParams(query), base ? base.replace(/\/?$/, '/') : document.baseURI);
}

function summary() {
  const {total} = chart.answer, matching = chart.range.q ? ' matching the filter' : '';
  if (!total) return `No documents${matching} in the range.`;
  return `${total} documents${matching} in the range; ${table.count === total ? 'all' : 'the newest ' + table.count} below.`;
}

function row(cells, timestamp) {
  // Documents are data from outside: only ever textContent, never innerHTML.
  const tr = document.createElement('tr');
  for (const text of cells) tr.insertCell().textContent = text;
  tr.dataset.timestamp = timestamp;
  return tr;
}

function labels(doc) {
  return (doc.labels ?? []).map(l => `${l.label} ${Math.round(l.confidence * 100)}%`).join(', ');
}

function when(date) {
  return new Date(date).toLocaleString();
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

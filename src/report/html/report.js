(function () {
  'use strict';
  window.addEventListener('error', function (e) {
    document.body.setAttribute('data-error', String(e.message || e));
  });
  var D = JSON.parse(document.getElementById('procflow-data').textContent);
  var app = document.getElementById('app');
  var SVG = 'http://www.w3.org/2000/svg';
  var PAGE = 100;

  // Every string from the data goes through text nodes, never markup.
  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) { if (attrs[k] !== null && attrs[k] !== undefined) e.setAttribute(k, attrs[k]); }
    (kids || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      e.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
    });
    return e;
  }
  function svg(tag, attrs, kids) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    (kids || []).forEach(function (c) {
      e.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
    });
    return e;
  }
  function bytes(n) {
    if (n === null || n === undefined) return '';
    if (n < 10000) return n + ' B';
    var u = ['kB', 'MB', 'GB', 'TB', 'PB'], v = n / 1000, i = 0;
    while (v >= 1000 && i < u.length - 1) { v /= 1000; i++; }
    return v.toFixed(1) + ' ' + u[i];
  }
  function when(t) { return t === null ? 'never (no end recorded)' : (t.utc || JSON.stringify(t)); }
  function clock(iso) { return iso ? iso.slice(11, 23) : ''; }
  function clockMs(ms) { return new Date(ms).toISOString().slice(11, 23); }
  function table(cols, rows, numeric) {
    var head = el('tr', {}, cols.map(function (c, i) { return el('th', { 'class': numeric[i] ? 'n' : null }, [c]); }));
    var body = el('tbody', {}, rows.map(function (r) {
      return el('tr', {}, r.map(function (v, i) { return el('td', { 'class': numeric[i] ? 'n' : (numeric[i] === 0 ? 'mono' : null) }, [v]); }));
    }));
    return el('table', {}, [el('thead', {}, [head]), body]);
  }

  // Header and key figures.
  var t = D.totals;
  var share = t.bytes ? (100 * t.attributed_bytes / t.bytes).toFixed(1) + '%' : '100%';
  app.appendChild(el('h1', {}, ['procflow report: ' + D.host]));
  app.appendChild(el('div', { 'class': 'sub' }, [D.bundle + ' \u2014 ' + D.tool + ' \u2014 kernel ' + D.kernel]));
  app.appendChild(el('div', { 'class': 'kpis' }, [
    ['flows', t.flows], ['bytes', bytes(t.bytes)], ['attributed', bytes(t.attributed_bytes) + ' (' + share + ')'],
    ['processes', t.processes], ['remote endpoints', t.endpoints], ['traffic', (t.first || '') + ' \u2192 ' + clock(t.last)]
  ].map(function (k) { return el('div', { 'class': 'kpi' }, [el('b', {}, [k[1]]), el('span', {}, [k[0]])]); })));

  // Evidence.
  var ev = el('section', { id: 'evidence' }, [el('h2', {}, ['Evidence'])]);
  var rec = D.recorder;
  var clean = rec.status === 'complete' || rec.status === 'stopped';
  var hashBad = D.inputs.some(function (f) { return f.recorded_hash === 'mismatch'; });
  ev.appendChild(el('p', {}, [
    'Recorder: ', el('span', { 'class': 'badge ' + (clean ? 'ok' : 'bad') }, [rec.status]),
    ' procflow-snap ' + rec.version + ', ' + rec.snapshots + ' snapshots, started ' +
      when(rec.started) + ', ended ' + when(rec.ended) + '. Input hashes: ',
    el('span', { 'class': 'badge ' + (hashBad ? 'bad' : 'ok') }, [hashBad ? 'MISMATCH' : 'no mismatch'])
  ]));
  if (rec.errors.length) {
    ev.appendChild(el('ul', { 'class': 'warnings' }, rec.errors.map(function (e) { return el('li', {}, ['recorder: ' + e]); })));
  }
  if (D.warnings.length) {
    ev.appendChild(el('ul', { 'class': 'warnings' }, D.warnings.map(function (w) { return el('li', {}, [w]); })));
  }
  ev.appendChild(table(['role', 'file', 'bytes', 'sha256', 'SHA256SUMS'], D.inputs.map(function (f) {
    var st = f.recorded_hash || '';
    return [f.role, f.path, f.bytes, f.sha256 || 'not hashed', el('span', { 'class': st === 'match' ? 'ok' : (st === 'mismatch' ? 'bad' : null) }, [st])];
  }), [false, 0, true, 0, false]));
  app.appendChild(ev);

  // Timeline: one lane per process (busiest first), other, unattributed.
  var T = D.timeline;
  var sec = el('section', { id: 'timeline' }, [el('h2', {}, ['Traffic over time']),
    el('p', { 'class': 'sub' }, ['Bytes per ' + (T.bin_ms >= 1000 ? (T.bin_ms / 1000).toFixed(2) + ' s' : T.bin_ms.toFixed(1) + ' ms') +
      ', each lane on its own scale (a flow\'s bytes are spread over its duration). Click a lane to list its flows.'])]);
  var LW = 200, PW = 1000, LH = 26, GAP = 4, top = 4;
  var H = top + T.lanes.length * (LH + GAP) + 28;
  var s = svg('svg', { viewBox: '0 0 ' + (LW + PW + 90) + ' ' + H, role: 'img', 'aria-label': 'traffic per process over time' });
  var palette = ['#3366cc', '#dc7633', '#2e9c5a', '#8e44ad', '#c0392b', '#16a0a0', '#b7950b', '#5d6d7e'];
  var bw = PW / Math.max(1, T.bins);
  T.lanes.forEach(function (l, i) {
    var y = top + i * (LH + GAP);
    var g = svg('g', { 'class': 'lane', 'data-kind': l.kind, 'data-pid': l.pid === null ? '' : l.pid, transform: 'translate(0,' + y + ')' });
    g.appendChild(svg('title', {}, [l.label + ': ' + bytes(l.total)]));
    g.appendChild(svg('text', { x: 4, y: LH / 2 + 4 }, [l.label.length > 30 ? l.label.slice(0, 29) + '\u2026' : l.label]));
    g.appendChild(svg('rect', { x: LW, y: 0, width: PW, height: LH, fill: '#f5f7f9' }));
    var max = Math.max.apply(null, l.bytes.concat([1]));
    var d = 'M' + LW + ' ' + LH;
    l.bytes.forEach(function (v, j) {
      var h = v > 0 ? Math.max(1, (v / max) * (LH - 2)) : 0;
      d += ' L' + (LW + j * bw).toFixed(1) + ' ' + (LH - h).toFixed(1) + ' L' + (LW + (j + 1) * bw).toFixed(1) + ' ' + (LH - h).toFixed(1);
    });
    d += ' L' + (LW + PW) + ' ' + LH + ' Z';
    var color = l.kind === 'unattributed' ? '#9aa3ad' : (l.kind === 'other' ? '#5d6d7e' : palette[i % palette.length]);
    g.appendChild(svg('path', { d: d, fill: color }));
    g.appendChild(svg('text', { x: LW + PW + 6, y: LH / 2 + 4 }, [bytes(l.total)]));
    g.style.cursor = 'pointer';
    g.addEventListener('click', function () {
      setFilter(l.kind === 'process' ? 'pid:' + l.pid : (l.kind === 'unattributed' ? 'method:unattributed' : ''));
    });
    s.appendChild(g);
  });
  var axis = svg('g', { 'class': 'axis', transform: 'translate(0,' + (H - 20) + ')' });
  for (var k = 0; k <= 5; k++) {
    var x = LW + (PW * k) / 5;
    axis.appendChild(svg('line', { 'class': 'grid', x1: x, x2: x, y1: -(H - 28), y2: 2 }));
    axis.appendChild(svg('text', { x: x, y: 14, 'text-anchor': k === 0 ? 'start' : (k === 5 ? 'end' : 'middle') },
      [clockMs(T.start_ms + (T.bin_ms * T.bins * k) / 5)]));
  }
  s.appendChild(axis);
  sec.appendChild(s);
  app.appendChild(sec);

  // Top tables.
  app.appendChild(el('h2', {}, ['Top processes by bytes']));
  app.appendChild(table(['pid', 'comm', 'out', 'in', 'flows', 'remotes', 'first', 'last', 'start', 'exe', 'cmdline'],
    D.processes.slice(0, 50).map(function (p) {
      return [p[0], p[2], bytes(p[5]), bytes(p[6]), p[7], p[8], clock(p[9]), clock(p[10]), p[1], p[3], p[4]];
    }), [true, false, true, true, true, true, false, false, false, 0, 0]));
  if (D.processes.length > 50) app.appendChild(el('p', { 'class': 'sub' }, [(D.processes.length - 50) + ' more in processes.csv']));
  if (D.local_pairs && D.local_pairs.length) {
    app.appendChild(el('h2', {}, ['Both ends on this host']));
    app.appendChild(table(['pid', 'comm', 'out', 'in', 'peer pid', 'peer comm', 'flows'],
      D.local_pairs.map(function (p) { return [p[0], p[1], bytes(p[2]), bytes(p[3]), p[4], p[5], p[6]]; }),
      [true, false, true, true, true, false, true]));
  }
  app.appendChild(el('h2', {}, ['Top remote endpoints']));
  app.appendChild(table(['proto', 'endpoint', 'out', 'in', 'flows', 'processes', 'unattributed'],
    D.endpoints.slice(0, 50).map(function (e) { return [e[0], e[1], bytes(e[2]), bytes(e[3]), e[4], e[5], e[6] ? bytes(e[6]) : '']; }),
    [false, 0, true, true, true, false, true]));
  app.appendChild(el('h2', {}, ['Unattributed traffic by reason']));
  app.appendChild(D.unattributed.length ? table(['reason', 'flows', 'bytes'],
    D.unattributed.map(function (u) { return [u[0], u[1], bytes(u[2])]; }), [false, true, true]) : el('p', {}, ['none']));
  app.appendChild(el('h2', {}, ['Methods and confidence']));
  app.appendChild(table(['method', 'confidence', 'flows', 'bytes'],
    D.methods.map(function (m) { return [m[0], m[1], m[2], bytes(m[3])]; }), [false, false, true, true]));

  // Flow table: filter, sort, page.
  var C = D.flow_columns, F = D.flows, view = F.slice(), page = 0, sortCol = 0, sortDir = 1;
  var numericCol = C.map(function (c) { return ['id', 'bytes_out', 'bytes_in', 'packets', 'pid'].indexOf(c) >= 0; });
  app.appendChild(el('h2', { id: 'flows' }, ['Flows']));
  var q = el('input', { type: 'search', placeholder: 'filter: text, pid:N, method:NAME, proto:udp' });
  var info = el('span', { 'class': 'sub' });
  var prev = el('button', { type: 'button' }, ['\u2190 previous']);
  var next = el('button', { type: 'button' }, ['next \u2192']);
  app.appendChild(el('div', { 'class': 'controls' }, [q, prev, next, info]));
  var heads = C.map(function (c, i) {
    var th = el('th', { 'class': 'sort' + (numericCol[i] ? ' n' : '') }, [c]);
    th.addEventListener('click', function () {
      sortDir = sortCol === i ? -sortDir : 1; sortCol = i; apply(false);
    });
    return th;
  });
  var tbody = el('tbody');
  app.appendChild(el('table', { id: 'flow-table' }, [el('thead', {}, [el('tr', {}, heads)]), tbody]));
  var texts = null;
  function rowText(i) {
    if (!texts) texts = F.map(function (r) { return r.join(' ').toLowerCase(); });
    return texts[i];
  }
  function matcher(s) {
    var terms = s.toLowerCase().split(/\s+/).filter(Boolean).map(function (w) {
      var m = /^(\w+):(.*)$/.exec(w), col = m ? C.indexOf(m[1]) : -1;
      if (col >= 0) return function (r) { var v = r[col]; if (v === null) return false; v = String(v).toLowerCase(); return numericCol[col] ? v === m[2] : v.indexOf(m[2]) >= 0; };
      return function (r, i) { return rowText(i).indexOf(w) >= 0; };
    });
    return function (r, i) { return terms.every(function (f) { return f(r, i); }); };
  }
  function apply(refilter) {
    if (refilter) {
      var m = matcher(q.value), v = [];
      for (var i = 0; i < F.length; i++) if (m(F[i], i)) v.push(F[i]);
      view = v;
      page = 0;
    }
    var c = sortCol, d = sortDir;
    view.sort(function (a, b) {
      var x = a[c], y = b[c];
      if (x === y) return a[0] - b[0];
      if (x === null || x === '') return 1;
      if (y === null || y === '') return -1;
      return (x < y ? -1 : 1) * d;
    });
    heads.forEach(function (h, i) { h.setAttribute('data-dir', i === c ? (d > 0 ? 'asc' : 'desc') : ''); });
    draw();
  }
  function draw() {
    var pages = Math.max(1, Math.ceil(view.length / PAGE));
    page = Math.min(Math.max(0, page), pages - 1);
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    view.slice(page * PAGE, page * PAGE + PAGE).forEach(function (r) {
      tbody.appendChild(el('tr', {}, r.map(function (v, i) {
        var c = C[i];
        var shown = (c === 'first_seen' || c === 'last_seen') ? clock(v) : v;
        return el('td', { 'class': numericCol[i] ? 'n' : null, title: c === 'first_seen' || c === 'last_seen' ? v : null }, [shown]);
      })));
    });
    info.textContent = view.length + ' of ' + F.length + ' flows, page ' + (page + 1) + ' of ' + pages;
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
  }
  function setFilter(s) {
    q.value = s; apply(true);
    document.getElementById('flows').scrollIntoView();
  }
  var timer = null;
  q.addEventListener('input', function () { clearTimeout(timer); timer = setTimeout(function () { apply(true); }, 150); });
  prev.addEventListener('click', function () { page--; draw(); });
  next.addEventListener('click', function () { page++; draw(); });
  apply(false);
  document.body.setAttribute('data-render-ms', String(Math.round(performance.now())));
  document.body.setAttribute('data-rendered', 'ok');
  document.body.setAttribute('data-lanes', String(T.lanes.length));
})();

(function () {
  'use strict';
  var table = document.getElementById('clients');
  if (table && table.tHead && table.tBodies.length) {
    var head = table.tHead.rows[0].cells;
    var body = table.tBodies[0];
    var sortBy = function (col, dir) {
      var numeric = head[col].getAttribute('data-type') === 'num';
      var val = function (row) {
        var c = row.cells[col];
        var v = c.getAttribute('data-v');
        return v === null ? c.textContent : v;
      };
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = val(a), y = val(b);
        if (x === '' || y === '') { return (x === '' ? 1 : 0) - (y === '' ? 1 : 0); }
        var d = numeric ? parseFloat(x) - parseFloat(y)
                        : x.localeCompare(y, undefined, { numeric: true });
        return dir === 'ascending' ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
      for (var i = 0; i < head.length; i++) { head[i].removeAttribute('aria-sort'); }
      head[col].setAttribute('aria-sort', dir);
    };
    var firstDir = function (th) {
      return th.getAttribute('data-type') === 'num' ? 'descending' : 'ascending';
    };
    Array.prototype.forEach.call(head, function (th, col) {
      var go = function () {
        var first = firstDir(th);
        var other = first === 'ascending' ? 'descending' : 'ascending';
        sortBy(col, th.getAttribute('aria-sort') === first ? other : first);
      };
      th.addEventListener('click', go);
      th.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); go(); }
      });
    });
    var m = /^#sort=([a-z0-9_]+)(?:,(asc|desc))?$/.exec(window.location.hash);
    if (m) {
      Array.prototype.forEach.call(head, function (th, col) {
        if (th.getAttribute('data-key') === m[1]) {
          sortBy(col, m[2] === 'asc' ? 'ascending' : m[2] === 'desc' ? 'descending' : firstDir(th));
        }
      });
    }
  }
  document.documentElement.setAttribute('data-sortable', 'ready');
})();

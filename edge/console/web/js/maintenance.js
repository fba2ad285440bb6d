// The fleet's maintenance-due table.
import {call} from './api.js';
import {time, esc, short} from './fmt.js';
import {remaining} from './panel.js';

const $ = (s) => document.querySelector(s);

export function initMaintenance(app) {
  const refresh = async () => {
    const tb = $('#due-table tbody');
    try {
      const r = await call('MaintenanceService', 'ListDue', {horizonDays: Number($('#due-days').value) || 0, limit: 500});
      tb.innerHTML = (r.items || []).map((d) => `<tr data-vehicle="${esc(d.vehicleId)}" class="${esc(short(d.state, 'PLAN_STATE_').replace(' ', '_'))}"><td><a href="#">${esc(d.vehicleId)}</a></td><td>${esc(d.planName || d.planId)}</td><td>${esc(short(d.state, 'PLAN_STATE_'))}</td><td>${remaining(d)}</td><td>${d.dueTime ? time(d.dueTime) : '—'}</td></tr>`).join('') ||
        '<tr><td colspan="5" class="muted">nothing due (maintenance plans: fleetctl plans add)</td></tr>';
    } catch (e) {
      tb.innerHTML = `<tr><td colspan="5" class="error">${esc(e.message)}</td></tr>`;
    }
  };
  $('#due-refresh').addEventListener('click', refresh);
  $('#due-table').addEventListener('click', (e) => {
    const tr = e.target.closest('tr[data-vehicle]');
    if (tr) { e.preventDefault(); app.flyTo(tr.dataset.vehicle); }
  });
  refresh();
}

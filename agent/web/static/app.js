// The console: plain JS calling the JSON API with the token kept in sessionStorage (this tab only).
"use strict";

const TOKEN_KEY = "orderagent.token";
const ME_KEY = "orderagent.me";

function token() { return sessionStorage.getItem(TOKEN_KEY); }
function me() { try { return JSON.parse(sessionStorage.getItem(ME_KEY) || "null"); } catch { return null; } }
function can(action) { const m = me(); return !!m && (m.can || []).includes(action); }

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(ME_KEY);
  location.href = "/console/signin";
}

async function api(path, options = {}) {
  const headers = Object.assign({ "Authorization": "Bearer " + token() }, options.headers || {});
  if (options.body && typeof options.body !== "string") {
    options.body = JSON.stringify(options.body);
    headers["Content-Type"] = "application/json";
  }
  const res = await fetch(path, Object.assign({}, options, { headers }));
  if (res.status === 401) { signOut(); throw new Error("signed out"); }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!res.ok) {
    const detail = data && data.detail !== undefined ? data.detail : data;
    const err = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    err.status = res.status;
    throw err;
  }
  return data;
}

// Server-sent events over fetch, so the Authorization header can be sent (EventSource cannot).
async function sse(path, options, onEvent) {
  const headers = Object.assign({ "Authorization": "Bearer " + token(), "Accept": "text/event-stream" },
                                options.headers || {});
  const res = await fetch(path, Object.assign({}, options, { headers }));
  if (res.status === 401) { signOut(); return; }
  if (!res.ok || !res.body) throw new Error("stream failed: " + res.status);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message", data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data) onEvent(event, JSON.parse(data));
    }
  }
}

function liveFeed(onState) {
  // reconnects after a dropped stream so the page keeps updating all day
  const run = () => sse("/feed?interval_s=1.5", {}, (ev, data) => { if (ev === "state") onState(data); })
    .catch(() => {}).finally(() => setTimeout(run, 3000));
  run();
}

function money(cents, currency = "USD") { return (cents / 100).toFixed(2) + " " + currency; }
function hhmm(iso) { return iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "-"; }
function badge(text, extra = "") { return el("span", { class: `badge state-${text} ${extra}` }, String(text).replaceAll("_", " ")); }

// ---- pages ---------------------------------------------------------------------------------

function header() {
  const m = me();
  if (!m) { if (document.body.dataset.page !== "signin") location.href = "/console/signin"; return; }
  const who = document.getElementById("who");
  if (who) who.textContent = `${m.name} · ${m.role}`;
  const out = document.getElementById("signout");
  if (out) out.addEventListener("click", signOut);
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === document.body.dataset.page) a.classList.add("active");
    if (a.dataset.nav === "supervisor" && !can("read")) a.hidden = true;
    if (a.dataset.nav === "dispatcher" && !can("read")) a.hidden = true;
  }
}

function signinPage() {
  const form = document.getElementById("signin-form");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const value = document.getElementById("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, value);
    const res = await fetch("/me", { headers: { "Authorization": "Bearer " + value } });
    if (!res.ok) {
      sessionStorage.removeItem(TOKEN_KEY);
      document.getElementById("signin-error").textContent = "That token is not valid.";
      return;
    }
    const info = await res.json();
    sessionStorage.setItem(ME_KEY, JSON.stringify(info));
    if (info.role === "integration") {
      document.getElementById("signin-error").textContent = "Integration tokens post events; they have no console.";
      return;
    }
    location.href = info.can.includes("decide") ? "/console/supervisor" : "/console/dispatcher";
  });
}

function renderFeed(state) {
  const list = document.getElementById("incident-feed");
  const summary = document.getElementById("feed-summary");
  if (!list) return;
  const open = state.incidents.filter(i => !["resolved", "failed", "escalated"].includes(i.status)).length;
  summary.textContent = `${state.incidents.length} recent incidents, ${open} open · ${state.approvals_pending} approvals pending`;
  list.replaceChildren(...state.incidents.map(i => el("li", { "data-incident": i.id },
    el("a", { href: `/console/incidents/${i.id}` }, i.id),
    badge(i.status),
    el("span", {}, `${i.type.replaceAll("_", " ")} · zone ${i.zone || "-"} · ${i.order_ids.length} orders`),
    el("span", { class: "muted small" }, hhmm(i.opened_at)))));
}

// This dispatcher's chat thread: a random id, kept in this browser per user. A thread belongs to the
// first who writes in it, so an id another user could guess ("dispatch-<name>") could be taken first.
function chatThread() {
  const key = "orderagent.chat." + me().name;
  let thread = localStorage.getItem(key);
  if (!thread) {
    const bytes = crypto.getRandomValues(new Uint8Array(8));
    const suffix = Array.from(bytes, b => b.toString(16).padStart(2, "0")).join("");
    thread = "dispatch-" + me().name.replace(/[^A-Za-z0-9_.:-]/g, "_").slice(0, 80) + "-" + suffix;
    localStorage.setItem(key, thread);
  }
  return thread;
}

function dispatcherPage() {
  liveFeed(renderFeed);
  const panel = document.getElementById("chat-panel");
  if (!can("chat")) { panel.replaceChildren(el("p", { class: "muted" }, "Your role cannot use the chat.")); return; }
  const thread = chatThread();
  const box = document.getElementById("messages");
  const add = (role, text) => { const n = el("div", { class: `msg ${role}` }, text); box.append(n); box.scrollTop = box.scrollHeight; return n; };
  api(`/chat/${thread}`).then(msgs => msgs.forEach(m => add(m.role, m.content))).catch(() => {});
  document.getElementById("chat-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = document.getElementById("chat-input");
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    add("user", text);
    const answer = add("assistant", "");
    answer.classList.add("pending");
    try {
      await sse(`/chat/${thread}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ message: text }) },
        (ev, data) => {
          if (ev === "delta") answer.textContent += data.text;
          if (ev === "error") answer.textContent += " (" + data.message + ")";
          if (ev === "done") { answer.classList.remove("pending"); answer.classList.add("done"); }
          box.scrollTop = box.scrollHeight;
        });
    } catch (err) { answer.textContent = "Could not reach the agent: " + err.message; }
  });
}

function shapChart(factors) {
  if (!factors || !factors.length) return null;
  const max = Math.max(...factors.map(f => Math.abs(Number(f.share_pct) || 0)), 1);
  return el("div", { class: "shap", "aria-label": "SHAP factors" },
    factors.slice(0, 8).map(f => [
      el("span", { title: f.feature }, f.label || f.feature),
      el("span", {}, el("div", { class: "bar" + (f.direction === "down" || f.direction === "decreases" ? " down" : ""),
                                 style: `width:${(100 * Math.abs(Number(f.share_pct) || 0) / max).toFixed(0)}%` })),
      el("span", { class: "muted" }, `${f.share_pct}%`),
    ]));
}

function argInputs(step, editable) {
  const wrap = el("div", { class: "args" });
  for (const [k, v] of Object.entries(step.args)) {
    const scalar = ["number", "string", "boolean"].includes(typeof v);
    if (editable && scalar && typeof v !== "boolean") {
      wrap.append(el("div", {}, el("label", { for: `a-${step.key}-${k}` }, k),
        el("input", { id: `a-${step.key}-${k}`, class: typeof v === "number" ? "num" : "", "data-arg": k,
                      "data-type": typeof v, type: typeof v === "number" ? "number" : "text", value: String(v) })));
    } else {
      wrap.append(el("div", {}, el("label", {}, k), el("code", {}, JSON.stringify(v))));
    }
  }
  return wrap;
}

function editedArgs(stepNode, original) {
  const args = JSON.parse(JSON.stringify(original));
  for (const input of stepNode.querySelectorAll("input[data-arg]")) {
    args[input.dataset.arg] = input.dataset.type === "number" ? Number(input.value) : input.value;
  }
  return args;
}

// decisions survive a redraw of the queue (the live feed redraws it whenever it changes)
const deciding = new Set();  // step keys whose decision is on its way or was accepted
const outcomes = new Map();  // step key -> the server's last answer, shown on the step while it is queued

function stepNodeNow(reqId, index) {  // the step as drawn now, which may not be the node that was clicked
  return document.querySelector(`.request[data-request="${CSS.escape(reqId)}"] .step[data-step="${index}"]`);
}

function stepButtons(reqId, index) {
  const node = stepNodeNow(reqId, index);
  return node ? node.querySelectorAll("button[data-action]") : [];
}

function noteDecision(req, step, text, ok) {
  outcomes.set(step.key, { text, ok });
  const [reqId, index] = [req.id, step.step_index];
  const node = stepNodeNow(reqId, index);
  const shown = node && node.querySelector(".result");
  if (shown) { shown.textContent = text; shown.className = `result ${ok ? "ok" : "error"}`; }
  // and in the log above the queue, which stays when the step or its request leaves the queue
  const log = document.getElementById("decisions");
  if (!log) return;
  log.prepend(el("li", { class: `result ${ok ? "ok" : "error"}` },
    `${text} Step ${index} (${step.tool}) of request `, el("code", {}, reqId.slice(0, 12))));
  while (log.children.length > 8) log.lastChild.remove();
}

function renderRequest(req) {
  const decide = can("decide");
  const node = el("div", { class: "request", "data-request": req.id },
    el("div", { class: "row" },
      el("h3", {}, "Request ", el("code", {}, req.id.slice(0, 12))),
      el("span", { class: "muted" }, "incident ", el("a", { href: `/console/incidents/${req.incident_id}` }, req.incident_id)),
      el("span", { class: "spacer" }),
      req.low_risk ? el("span", { class: "badge ok" }, "low risk") : null,
      el("span", { class: "countdown", "data-deadline": String(Date.now() + 1000 * (req.seconds_left ?? 0)) }, "")),
    el("p", { class: "muted small" }, `confidence ${(req.confidence * 100).toFixed(0)}% · needs ${req.required_approvals} approver(s) · policy ${req.policy_version}`));
  for (const step of req.steps) {
    step.key = `${req.id}-${step.step_index}`;
    const pending = step.status === "pending";
    const stepNode = el("div", { class: "step", "data-step": step.step_index });
    const left = el("div", {},
      el("div", { class: "row" }, el("strong", {}, `${step.step_index}. ${step.tool}`), badge(step.status),
         step.edited ? el("span", { class: "badge" }, "edited") : null),
      step.rationale ? el("p", { class: "small" }, step.rationale) : null,
      argInputs(step, decide && pending),
      step.reasons && step.reasons.length ? el("ul", { class: "reasons" }, step.reasons.map(r => el("li", {}, r.message || r.code))) : null,
      el("p", { class: "muted small" }, `confidence ${(step.confidence * 100).toFixed(0)}%` +
         (step.money_cents ? ` · ${money(step.money_cents)}` : "") + ` · approvals ${step.approvals.length}/${step.approvals_required}`));
    if (decide && pending) {
      const act = async (decision) => {
        const body = { decision };
        if (decision === "edit") body.args = editedArgs(stepNode, step.args);
        if (decision === "reject") {
          body.reason = prompt("Why reject this step?") || "";
          if (!body.reason) return;
        }
        // one decision in flight per step, across redraws of the queue: a double click, or a click on
        // the redrawn button while the first answer is on its way, must not send a second one (the
        // server would refuse it, 409, and its error would cover the first one's success)
        if (deciding.has(step.key)) return;
        deciding.add(step.key);
        stepButtons(req.id, step.step_index).forEach(b => { b.disabled = true; });
        try {
          await api(`/approvals/${req.id}/steps/${step.step_index}/decision`, { method: "POST", body });
          // the step stays in `deciding`: this supervisor's decision is taken, and a redraw while the
          // step still waits (for another approver) must not offer a second one
          noteDecision(req, step, decision === "reject" ? "Rejected." : "Approved.", true);
          setTimeout(refreshQueue, 400);
        } catch (err) {
          deciding.delete(step.key);
          noteDecision(req, step, err.message, false);
          stepButtons(req.id, step.step_index).forEach(b => { b.disabled = false; });
        }
      };
      const decidedHere = deciding.has(step.key);  // on its way, or accepted
      left.append(el("div", { class: "actions" },
        el("button", { type: "button", class: "approve", "data-action": "approve", disabled: decidedHere, onclick: () => act("approve") }, "Approve"),
        el("button", { type: "button", class: "secondary", "data-action": "edit", disabled: decidedHere, onclick: () => act("edit") }, "Approve with edits"),
        el("button", { type: "button", class: "reject", "data-action": "reject", disabled: decidedHere, onclick: () => act("reject") }, "Reject")));
    }
    const outcome = outcomes.get(step.key);
    left.append(el("p", { class: outcome ? `result ${outcome.ok ? "ok" : "error"}` : "result", role: "status" }, outcome ? outcome.text : ""));
    stepNode.append(left, el("div", {}, step.shap_factors && step.shap_factors.length ? el("div", {}, el("h4", {}, "Why this amount (SHAP)"), shapChart(step.shap_factors)) : el("span", { class: "muted small" }, "no model factors")));
    node.append(stepNode);
  }
  return node;
}

function tickCountdowns() {
  for (const n of document.querySelectorAll("[data-deadline]")) {
    const left = Math.max(0, (Number(n.dataset.deadline) - Date.now()) / 1000);
    const m = Math.floor(left / 60), s = Math.floor(left % 60);
    n.textContent = left > 0 ? `expires in ${m}:${String(s).padStart(2, "0")}` : "expired";
    n.classList.toggle("soon", left < 120);
  }
}

let lastQueueKey = "";
async function refreshQueue() {
  const queue = document.getElementById("queue");
  try {
    const reqs = await api("/approvals?status=pending");
    lastQueueKey = reqs.map(r => r.id + r.steps.map(s => s.status).join()).join("|");
    document.getElementById("queue-summary").textContent = reqs.length ? `${reqs.length} pending` : "Nothing waits for a decision.";
    queue.replaceChildren(...reqs.map(renderRequest));
    const bulk = document.getElementById("bulk-approve");
    bulk.hidden = !can("decide") || !reqs.some(r => r.low_risk);
    tickCountdowns();
  } catch (err) { document.getElementById("queue-summary").textContent = err.message; }
}

function supervisorPage() {
  refreshQueue();
  setInterval(tickCountdowns, 1000);
  let seen = "";
  liveFeed(state => {
    const key = state.approval_ids.join();
    // redraw only when the queue changed and nobody is typing into an edit field
    if (key !== seen && !document.activeElement.matches("input[data-arg]")) { seen = key; refreshQueue(); }
  });
  document.getElementById("bulk-approve").addEventListener("click", async () => {
    const out = await api("/approvals/bulk-approve", { method: "POST", body: {} });
    document.getElementById("queue-summary").textContent = `Approved ${out.approved.length}; left for review ${Object.keys(out.skipped).length}.`;
    setTimeout(refreshQueue, 400);
  });
}

async function incidentPage() {
  const id = document.body.dataset.incident;
  const load = async () => {
    const d = await api(`/incidents/${id}`);
    const inc = d.incident;
    document.getElementById("inc-status").replaceWith(Object.assign(badge(inc.status), { id: "inc-status" }));
    document.getElementById("inc-summary").textContent =
      `${inc.type.replaceAll("_", " ")} · zone ${inc.zone || "-"} · ${inc.order_ids.length} orders · ${inc.event_count} events · planner ${inc.planner || "-"}` + (inc.summary ? ` · ${inc.summary}` : "");
    document.getElementById("steps").replaceChildren(...d.steps.map(s => el("tr", { "data-step": s.index },
      el("td", {}, s.index), el("td", {}, s.tool), el("td", {}, el("code", {}, JSON.stringify(s.args))),
      el("td", {}, s.verdict ? badge(s.verdict.decision) : "-"), el("td", { class: "step-state" }, badge(s.state)))));
    document.getElementById("executions").replaceChildren(...(d.executions.length ? d.executions.map(e => el("li", {},
      badge(e.status), ` step ${e.step_index} ${e.tool}`,
      e.result && e.result.amount_cents ? ` · ${e.result.kind || ""} ${money(e.result.amount_cents, e.result.currency)}` : "",
      e.approved_by && e.approved_by.length ? ` · approved by ${e.approved_by.join(", ")}` : "",
      e.error ? el("span", { class: "error" }, " " + e.error) : "")) : [el("li", { class: "muted" }, "nothing executed yet")]));
    document.getElementById("timeline").replaceChildren(...d.timeline.map(r => el("li", {},
      el("strong", {}, r.stage), " ", el("span", { class: "muted small" }, hhmm(r.created_at || r.at || r.recorded_at)),
      r.approver_id ? ` · ${r.approver_id} (${r.approver_role})` : "", r.reason ? ` · ${r.reason}` : "")));
  };
  const chain = document.getElementById("chain-status");
  try {
    await load();
  } catch (err) {  // an unknown id (404) or a lost connection: say so instead of a blank page
    document.getElementById("inc-summary").replaceChildren(el("span", { class: "error", id: "inc-error" }, err.message));
    chain.textContent = "-";
    return;
  }
  setInterval(() => load().catch(() => {}), 3000);
  if (can("audit")) {
    api("/audit/verify").then(r => { chain.textContent = r.ok ? `verified (${r.records} records)` : `BROKEN at ${r.first_bad_seq}`; chain.className = "badge " + (r.ok ? "ok" : "bad"); })
      .catch(err => { chain.textContent = err.message; });
  } else {
    chain.textContent = "visible to auditors and supervisors";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "signin") { signinPage(); return; }
  header();
  if (!me()) return;
  if (page === "dispatcher") dispatcherPage();
  if (page === "supervisor") supervisorPage();
  if (page === "incident") incidentPage();
});

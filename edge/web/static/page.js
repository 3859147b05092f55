// The guard-room page: the document the server pushes (server-sent events), drawn with
// textContent only (every string is text, never HTML), and the actions after login.
"use strict";

const $ = (id) => document.getElementById(id);
let csrf = null;
let session = null;
let source = null;
let retry = null;
let last = null;
let wantsLogin = false;  // the guard asked for the login form on a page they may read
const drawn = {};  // section → the JSON last drawn there, so unchanged parts stay put

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

// Chinese first, English beside.
function bi(zh, en, cls) {
  const s = el("span", cls);
  s.append(zh + " ", el("span", "en", en));
  return s;
}

function fill(id, ...children) {
  $(id).replaceChildren(...children);
}

function changed(key, value) {
  const text = JSON.stringify(value);
  if (drawn[key] === text) return false;
  drawn[key] = text;
  return true;
}

async function start() {
  clearTimeout(retry);
  try {
    const r = await fetch("/api/session", {cache: "no-store"});
    session = await r.json();
  } catch (e) {
    setConn(false);
    retry = setTimeout(start, 3000);
    return;
  }
  csrf = session.csrf;
  const mayRead = session.logged_in || !session.read_needs_login;
  $("login").hidden = session.logged_in || !session.actions || (mayRead && !wantsLogin);
  $("main").hidden = !mayRead;
  $("logout").hidden = !session.logged_in;
  for (const e of document.querySelectorAll(".act")) e.hidden = !session.logged_in;
  drawLoginHint();
  if (mayRead) {
    connect();
  } else if (source) {
    source.close();
    source = null;
  }
  if (last) draw(last);
}

function drawLoginHint() {
  const hint = $("login-hint");
  hint.replaceChildren();
  if (session.logged_in) return;
  if (!session.actions) {
    hint.append(bi("页面只读：设置 [web] password_file 后可在此操作。",
                   "Read-only: set [web] password_file to act from this page."));
    return;
  }
  const b = el("button");
  b.type = "button";
  b.id = "show-login";
  b.append(bi("登录后可消音、巡检、演练", "Log in to silence, walk-test, drill"));
  b.addEventListener("click", () => { wantsLogin = true; start(); $("password").focus(); });
  hint.append(b);
}

function connect() {
  if (source) return;
  source = new EventSource("/api/stream");
  source.onmessage = (m) => {
    setConn(true);
    last = JSON.parse(m.data);
    draw(last);
  };
  source.onerror = () => {
    setConn(false);
    if (source && source.readyState === EventSource.CLOSED) {
      source = null;
      retry = setTimeout(start, 3000);
    }
  };
}

function setConn(ok) {
  const c = $("conn");
  c.classList.toggle("lost", !ok);
  c.replaceChildren(ok ? bi("实时", "live") : bi("连接中断，正在重连…", "disconnected, retrying…"));
  if (ok && last && last.time) c.append(" " + last.time);
}

const LAMP = {
  off: ["指示灯灭：无报警", "lamp off: no alarm"],
  blinking: ["指示灯闪烁：报警尚未送达", "lamp blinking: the alarm is not delivered yet"],
  steady: ["指示灯常亮：报警已送达", "lamp steady: the alarm got through"],
  fault: ["指示灯快闪：设备故障", "lamp blinking fast: a part is in fault"],
};

function draw(doc) {
  $("site").textContent = doc.site;
  document.title = doc.site + " 报警主机";
  setConn(!$("conn").classList.contains("lost"));
  const daemon = $("daemon");
  daemon.hidden = doc.daemon.ok;
  if (!doc.daemon.ok) {
    daemon.replaceChildren(bi("报警主机程序无应答", "the alarm daemon does not answer"),
                           el("span", "detail", " " + (doc.daemon.error || "")));
  }
  drawAlarm(doc);
  if (changed("inputs", doc.inputs)) drawInputs(doc.inputs);
  if (changed("device", [doc.modem, doc.uplink, doc.store, doc.siren])) drawDevice(doc);
  if (changed("faults", doc.faults)) drawFaults(doc.faults);
  drawModes(doc);
  if (changed("overdue", doc.overdue)) {
    fill("overdue-list", ...(doc.overdue.length ? doc.overdue.map((o) => el("li", "", o.label))
                                                : [el("li", "note", "无 none")]));
  }
  if (changed("events", doc.events)) drawEvents(doc.events);
}

function drawAlarm(doc) {
  const panel = $("alarm");
  const active = doc.alarm.active;
  panel.classList.toggle("alarming", active);
  panel.classList.toggle("quiet", !active);
  document.body.classList.toggle("alarming", active);
  fill("alarm-title", active ? bi("报警中", "ALARM") : bi("正常，无报警", "No alarm"));
  fill("alarm-list", ...doc.alarm.alarms.map((a) => {
    const li = el("li");
    li.dataset.input = a.input;
    li.append(el("strong", "", a.label), " ", a.time || "", " ");
    if (a.delivered === undefined) return li;
    const how = [];
    if (a.platform) how.push("平台 platform");
    if (a.sms_sent) how.push("短信 SMS ×" + a.sms_sent);
    li.append(a.delivered ? bi("已送达 " + how.join("、"), "delivered", "tag")
                          : bi("尚未送达", "not delivered yet", "tag bad"));
    return li;
  }));
  const siren = doc.siren;
  fill("siren", !siren ? "" : !siren.configured ? bi("未配置警号", "no siren configured")
       : siren.on ? bi("警号：鸣响中", "siren: sounding") : bi("警号：关", "siren: off"));
  const lamp = LAMP[doc.indicator];
  fill("lamp", lamp ? bi(lamp[0], lamp[1]) : "");
  $("silence-button").disabled = !active;
  $("ack-button").disabled = !active;
}

function drawInputs(inputs) {
  fill("input-list", ...inputs.map((i) => {
    const li = el("li", i.alarm ? "alarm" : i.active ? "active" : "");
    li.id = "input-" + i.name;
    li.dataset.state = i.state_en;
    li.append(el("strong", "", i.label), " ", el("span", "en", i.name));
    li.append(bi(i.state_zh, i.state_en, "state"));
    if (i.alarm) li.append(bi("报警", "alarm", "tag bad"));
    if (i.overdue) li.append(bi("未巡检", "walk test overdue", "tag warn"));
    return li;
  }));
}

function row(dl, zh, en, value, cls) {
  dl.append(el("dt", "", ""), el("dd", cls || "", ""));
  dl.lastChild.previousSibling.append(bi(zh, en));
  dl.lastChild.append(value);
}

function drawDevice(doc) {
  const dl = $("device-list");
  dl.replaceChildren();
  const m = doc.modem;
  if (m) {
    const signal = !m.configured ? bi("未配置", "not configured")
      : m.signal === null || m.signal === undefined ? bi("未知", "unknown")
      : m.signal + "/31" + (m.ok ? "" : " ✗ " + (m.reason || ""));
    row(dl, "短信模块信号", "modem signal", signal, m.configured && !m.ok ? "bad" : "");
  }
  const u = doc.uplink;
  if (u) {
    const backlog = !u.configured ? bi("未配置", "not configured")
      : bi(u.pending + " 条待上传", u.pending + " waiting" +
           (u.oldest_pending_s ? ", oldest " + Math.round(u.oldest_pending_s) + " s" : ""));
    row(dl, "平台上传积压", "upload backlog", backlog, u.pending ? "bad" : "good");
  }
  row(dl, "事件存储", "event store",
      doc.store.ok ? bi("正常", "ok") : bi("无法读取", "unreadable: " + doc.store.error),
      doc.store.ok ? "good" : "bad");
}

function drawFaults(faults) {
  if (!faults) return fill("fault-list");
  fill("fault-list", ...(faults.length ? faults.map((f) => {
    const li = el("li");
    li.append(el("strong", "bad", f.label), " ", el("span", "en", f.label_en + ": " + f.reason));
    li.append(el("br"), bi(f.advice_zh, f.advice_en));
    return li;
  }) : [el("li", "good", "无故障 no faults")]));
}

function drawModes(doc) {
  const drill = doc.drill;
  const walk = doc.walktest;
  if (drill && changed("drill", drill)) {
    fill("drill-state", drill.active ? bi("演练模式：开，至 " + drill.until.slice(11, 16),
                                          "drill mode on until " + drill.until.slice(11, 16))
                                     : bi("演练模式：关", "drill mode off"));
    fill("drill-toggle", drill.active ? bi("结束演练", "End drill") : bi("开始演练", "Start drill"));
    $("drill-toggle").dataset.on = drill.active ? "1" : "";
  }
  if (walk && changed("walktest", walk)) {
    fill("walktest-state", walk.active
      ? bi("巡检：进行中（" + walk.by + "），至 " + walk.until.slice(11, 16) + "。按下每个报警点",
           "walk test on (" + walk.by + ") until " + walk.until.slice(11, 16) + ": press each point")
      : bi("巡检：关", "walk test off"));
    fill("walktest-toggle", walk.active ? bi("结束巡检", "End walk test")
                                        : bi("开始巡检", "Start walk test"));
    $("walktest-toggle").dataset.on = walk.active ? "1" : "";
    $("walktest-name").hidden = walk.active;
  }
}

function drawEvents(events) {
  fill("event-list", ...(events.length ? events.map((e) => {
    const li = el("li", e.alarm ? "alarm" : "");
    li.dataset.kind = e.kind;
    li.append(el("time", "", e.time));
    const body = el("span", "body");
    body.append(bi(e.word, e.kind_en, "what"), " ", e.label);
    if (e.detail) body.append(el("span", "detail", e.detail));
    li.append(body);
    if (e.snapshot) {
      const a = el("a");
      a.href = e.snapshot;
      a.target = "_blank";
      a.rel = "noopener";
      const img = el("img");
      img.src = e.thumbnail;
      img.alt = "照片 snapshot";
      img.loading = "lazy";
      a.append(img);
      li.append(a);
    }
    return li;
  }) : [el("li", "note", "今天还没有事件 no events today")]));
}

function say(text, bad) {
  const m = $("action-msg");
  m.textContent = text;
  m.classList.toggle("error", !!bad);
}

async function post(path, body) {
  let r;
  try {
    r = await fetch(path, {method: "POST", credentials: "same-origin", cache: "no-store",
                           headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf || ""},
                           body: JSON.stringify(body)});
  } catch (e) {
    say("无法连接 cannot reach the page's server", true);
    return null;
  }
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) {
    say(answer.error || ("错误 error " + r.status), true);
    if (r.status === 401) start();
    return null;
  }
  return answer;
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const answer = await post("/api/login", {password: $("password").value});
  $("password").value = "";
  if (answer) {
    $("login-error").textContent = "";
    wantsLogin = false;
    say("");
    start();
  } else {
    $("login-error").textContent = $("action-msg").textContent;
    say("");
  }
});

$("logout").addEventListener("click", async () => {
  await post("/api/logout", {});
  start();
});

$("silence-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const answer = await post("/api/silence", {name: $("silence-name").value});
  if (answer) say("已消音并确认 " + answer.result.length + " 个报警 silenced " +
                  answer.result.length + " alarm(s)");
});

$("ack-button").addEventListener("click", async () => {
  const answer = await post("/api/acknowledge", {name: $("silence-name").value});
  if (answer) say("已确认收到 " + answer.result.length + " 个报警，警号继续 acknowledged " +
                  answer.result.length + " alarm(s); the siren sounds on");
});

$("drill-toggle").addEventListener("click", async () => {
  const on = !$("drill-toggle").dataset.on;
  if (await post("/api/drill", {on})) say(on ? "演练已开始 drill on" : "演练已结束 drill off");
});

$("walktest-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const on = !$("walktest-toggle").dataset.on;
  const body = on ? {on, name: $("walktest-name").value} : {on};
  if (await post("/api/walktest", body)) say(on ? "巡检已开始 walk test on" : "巡检已结束 walk test off");
});

start();

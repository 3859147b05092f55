"""The words of every SMS: Chinese texts signed 【site.name】 that name the label, what
happened and the local time (spec §5). [sms] templates replace them per kind."""

from __future__ import annotations

import datetime as dt
import string

from edge.clock import DatedLocalTime, LocalTime
from edge.config import Config
from edge.events import Event
from edge.kinds import DEFAULT_TEMPLATES, LATCHING_KINDS
from edge.safe_text import safe_text
from edge.status_doc import StatusDoc

FALLBACK_NOTE = "（平台无法连接，经短信补发）"
# Of a stranger's text, an SMS shows this many characters at most.
REFUSED_TEXT_SHOWN = 40
# Right after the signature of an SMS sent again because the first copy's confirmation was
# lost (it may have arrived): the reader sees the same alarm, not a second one.
RESENT_NOTE = "（重发）"

# Fault reasons in words the principal can act on.
REASON_WORDS = {
    "port_gone": "模块断开", "port_busy": "端口被其他程序占用", "silent": "模块无响应", "sim_missing": "未检测到SIM卡",
    "sim_pin": "SIM卡PIN码错误或被锁", "not_registered": "未注册到移动网络",
    "signal_low": "信号弱", "signal_unknown": "无信号", "smsc_empty": "短信中心号码为空",
    "unreachable": "平台无法连接", "rejected": "平台拒收", "misconfigured": "配置错误",
    "corrupt": "数据库损坏，已隔离", "unwritable": "无法写入", "full": "存储空间已满",
    "low_space": "存储空间不足", "events_dropped": "无法写入，部分事件已丢失",
    "unreadable": "无法读取",
    "not_synchronised": "时间未同步", "unavailable": "不可用", "capture_failed": "拍照失败",
}


def local_time(event: Event, cfg: Config) -> dt.datetime:
    return event.time.astimezone(cfg.site.tz)


def alert_text(event: Event, cfg: Config, *, fallback: bool = False, resent: bool = False,
               to: str | None = None, now: dt.datetime | None = None) -> str:
    """The SMS for ``event``; ``fallback``: it goes because the platform did not take it;
    ``resent``: an earlier copy may have arrived; ``to``: the contact's name (one who may
    command is told what a reply does); ``now``: when it goes (default: now): an event of
    another local day shows its date."""
    template = cfg.sms.templates.get(event.kind) or DEFAULT_TEMPLATES.get(
        event.kind, "【{site}】{label}：{kind} 于 {time}。")
    local = local_time(event, cfg)
    sent_on = (now or dt.datetime.now(cfg.site.tz)).astimezone(cfg.site.tz).date()
    shown_time = LocalTime if local.date() == sent_on or "{date" in template else DatedLocalTime
    reason = event.data.get("reason", "")
    # Whatever came with the event (a sender's number or name, its text, a name typed on
    # a page) is escaped: nothing under the school's signature is a stranger's raw text.
    fields: dict[str, object] = {key: safe_text(value) for key, value in {
        "label": event.data.get("label", event.subject),
        "subject": event.subject,
        "kind": event.kind,
        "reason": REASON_WORDS.get(reason, reason),
        "by": event.data.get("by") or event.data.get("number", ""),
    }.items()}
    fields.update(site=cfg.site.name, time=shown_time.of(local), date=local.strftime("%m-%d"),
                  text=safe_text(event.data.get("text", ""), REFUSED_TEXT_SHOWN))
    text = string.Formatter().vformat(template, (), fields)
    signature = f"【{cfg.site.name}】"
    if not text.startswith(signature):  # every alert is signed (spec §5), templates too
        text = signature + text
    if resent:
        text = signature + RESENT_NOTE + text[len(signature):]
    # The uplink's own fault already says the platform is unreachable.
    if fallback and not (event.kind == "fault" and event.subject == "uplink"):
        text += FALLBACK_NOTE
    if event.kind in LATCHING_KINDS and any(c.name == to and c.may_command
                                            for c in cfg.contacts):
        text += reply_hint(cfg)
    return text


def _reply_word(cfg: Config, word: str) -> str:
    """A command as the contact types it: "“解除”", or "“密码+解除”" with a command PIN
    (which no SMS ever shows)."""
    return f"“密码+{word}”" if cfg.sms.command_pin else f"“{word}”"


def reply_hint(cfg: Config) -> str:
    """What each reply to an alarm does (spec §5): 解除 silences, 收到 only acknowledges."""
    return (f"回复{_reply_word(cfg, '解除')}关闭警号，"
            f"回复{_reply_word(cfg, '收到')}表示已知悉（警号继续鸣响）。")


def command_reply(command: str, alarms: int, status: StatusDoc, cfg: Config) -> str:
    """The answer to a silence or acknowledge command that ended or acknowledged
    ``alarms`` alarms, followed by the status."""
    if command == "silence":
        said = f"已解除{alarms}个报警，警号已关闭。" if alarms else "当前没有报警，警号已关闭。"
    elif alarms:
        # Not "the siren sounds": it may have stopped after max_on_s (the status says).
        said = (f"已记录您知悉{alarms}个报警，报警未解除；"
                f"回复{_reply_word(cfg, '解除')}关闭警号并解除报警。")
    else:
        said = "当前没有需要确认的报警。"
    return f"【{cfg.site.name}】{said}" + status_text(status, cfg).split("：", 1)[1]


def status_text(status: StatusDoc, cfg: Config) -> str:
    """The answer to STATUS: alarm state, gates, open faults, uplink backlog, signal."""
    alarm = status["alarm"]
    if alarm["active"]:
        labels = [status["inputs"][n]["label"] for n in alarm["inputs"] if n in status["inputs"]]
        parts = ["报警中：" + "、".join(labels)]
    else:
        parts = ["无报警"]
    gates = [f"{i['label']}{'开' if i.get('open') else '关'}"
             for i in status["inputs"].values() if i["kind"] == "gate"]
    if gates:
        parts.append("门：" + "、".join(gates))
    faults = [cfg.label_of(f) for f in status["faults"]]
    parts.append("故障：" + ("、".join(faults) if faults else "无"))
    if status["uplink"].get("configured"):
        parts.append(f"待上传{status['uplink']['pending']}条")
    signal = status["modem"].get("signal")
    parts.append(f"信号{signal if signal is not None else '未知'}")
    if status.get("siren", {}).get("on"):
        parts.append("警号鸣响中")
    when = status["time"][11:16]
    return f"【{cfg.site.name}】状态 {when}：" + "；".join(parts) + "。"


def help_text(cfg: Config) -> str:
    pin_note = "指令前加指令密码，" if cfg.sms.command_pin else ""
    return (f"【{cfg.site.name}】未识别的指令。{pin_note}可回复：解除（SILENCE）关闭警号并确认报警，"
            "收到（ACK）表示已知悉，状态（STATUS）查询。")


def test_text(cfg: Config) -> str:
    now = dt.datetime.now(cfg.site.tz).strftime("%H:%M:%S")
    return f"【{cfg.site.name}】测试短信：报警主机短信通道正常（{now}）。"

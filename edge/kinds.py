"""Every event kind and what it is, in one table: whether it latches, whether it is an
alarm (spec §3), whether a contact may be told of it, its default SMS and where that SMS
goes in the sending order (spec §5). A new kind is one line here (and its schema entry in
docs/cloudevents.schema.json)."""

from __future__ import annotations

from dataclasses import dataclass

# The order of every SMS sent (spec §5): panic and tamper, then the other alarm kinds and
# drills, then replies to commands and test SMS, then everything else.
URGENT_RANK, ALARM_RANK, REPLY_RANK, OTHER_RANK = range(4)
SUMMARY_RANK = OTHER_RANK + 1  # the daily summary (no event): after every other SMS


@dataclass(frozen=True)
class Kind:
    name: str
    word: str  # what it is called in Chinese
    template: str | None = None  # its SMS unless [sms] templates has one
    latches: bool = False  # stays active until silenced, sounding the siren (GB 50394)
    alarm: bool = False  # an alarm kind of spec §3: kept first when memory drops events
    receivable: bool = True  # a contact's `receives` may list it
    immediate: bool = False  # in [sms] immediate unless the config says otherwise
    snapshot: bool = False  # its event carries a camera snapshot
    sms_rank: int = OTHER_RANK
    # Texted at once to the contacts who receive this other kind (a drill: as a panic).
    texted_as: str | None = None
    # Its state family: the latest event of a family per subject is a state restored at
    # start (latched or silenced, gate open or closed…) and outlives retention; the
    # family's first kind is its active state.
    family: str | None = None


KIND_TABLE: tuple[Kind, ...] = (
    Kind("panic", "一键报警", "【{site}】紧急报警：{label} 于 {time} 触发。",
         latches=True, alarm=True, immediate=True, snapshot=True, sms_rank=URGENT_RANK,
         family="latch"),
    Kind("gate_open", "开门", "【{site}】{label} 于 {time} 打开。", family="gate"),
    Kind("gate_closed", "关门", "【{site}】{label} 于 {time} 关闭。", family="gate"),
    Kind("gate_after_hours", "非开放时段开门",
         "【{site}】非开放时段开门：{label} 于 {time} 打开。",
         alarm=True, immediate=True, snapshot=True, sms_rank=ALARM_RANK),
    Kind("gate_held_open", "门未关",
         "【{site}】门未关闭：{label} 于 {time} 仍然开着，已超过规定时长。",
         alarm=True, sms_rank=ALARM_RANK, family="gate"),
    Kind("tamper", "防拆", "【{site}】防拆报警：{label} 于 {time} 被打开。",
         latches=True, alarm=True, immediate=True, snapshot=True, sms_rank=URGENT_RANK,
         family="latch"),
    Kind("fault", "故障", "【{site}】设备故障：{label}（{reason}）于 {time} 发生，请及时检修。",
         alarm=True, sms_rank=ALARM_RANK),
    Kind("recovered", "恢复", "【{site}】故障恢复：{label} 于 {time} 恢复正常。"),
    Kind("silenced", "报警解除", "【{site}】报警已解除：{label} 由 {by} 于 {time} 确认。",
         family="latch"),
    Kind("acknowledged", "报警知悉",
         "【{site}】报警已知悉：{label} 的报警由 {by} 于 {time} 回复收到，报警未解除。"),
    Kind("heartbeat", "心跳", receivable=False),
    Kind("drill", "演练", "【{site}】【演练】{label} 于 {time} 触发（演练，非真实报警）。",
         sms_rank=ALARM_RANK, texted_as="panic"),
    Kind("sms_refused", "拒绝无权限短信指令", "【{site}】已拒绝号码 {by} 的短信指令（{time}）：{text}"),
    Kind("power_lost", "市电中断", "【{site}】市电中断：{label} 于 {time} 报告停电。",
         alarm=True, sms_rank=ALARM_RANK, family="mains"),
    Kind("power_restored", "市电恢复", "【{site}】市电恢复：{label} 于 {time} 恢复供电。",
         family="mains"),
    Kind("battery_low", "电池电量低", "【{site}】电池电量低：{label} 于 {time} 报告。",
         family="battery"),
    # An escalation call (spec §3): for the record and the platform, never texted.
    Kind("call", "报警电话", receivable=False),
    # Never texted (no alarm, no SMS during a walk test); the latest per input outlives
    # retention: it says when the input was last tested ([walktest] due_days).
    Kind("input_tested", "巡检", receivable=False, family="walktest"),
)
BY_NAME = {kind.name: kind for kind in KIND_TABLE}

# Not an event: the daily summary, which a contact's `receives` may list too.
SUMMARY = "summary"

KINDS = tuple(BY_NAME)
LATCHING_KINDS = frozenset(k.name for k in KIND_TABLE if k.latches)
ALARM_KINDS = frozenset(k.name for k in KIND_TABLE if k.alarm)
SNAPSHOT_KINDS = frozenset(k.name for k in KIND_TABLE if k.snapshot)
RECEIVABLE_KINDS = frozenset({*(k.name for k in KIND_TABLE if k.receivable), SUMMARY})
DEFAULT_IMMEDIATE = frozenset(k.name for k in KIND_TABLE if k.immediate)
DEFAULT_TEMPLATES = {k.name: k.template for k in KIND_TABLE if k.template is not None}
SMS_RANKS = {k.name: k.sms_rank for k in KIND_TABLE if k.sms_rank != OTHER_RANK}
TEXTED_AS = {k.name: k.texted_as for k in KIND_TABLE if k.texted_as is not None}


def family(name: str) -> tuple[str, ...]:
    """The kinds of a state family, its active state first."""
    return tuple(k.name for k in KIND_TABLE if k.family == name)


LATCH_STATE = family("latch")
GATE_STATE = family("gate")
MAINS_STATE = family("mains")
BATTERY_STATE = family("battery")
STATE_FAMILIES = tuple(family(name) for name in dict.fromkeys(
    k.family for k in KIND_TABLE if k.family is not None))

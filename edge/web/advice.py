"""What the guard or the installer should do about each fault, Chinese first and English
beside, as the page shows it: by part and reason, else by part (the README's
troubleshooting table, said shortly)."""

from __future__ import annotations

Advice = tuple[str, str]  # (Chinese, English)

BY_REASON: dict[tuple[str, str], Advice] = {
    ("modem", "port_gone"): ("检查短信模块的USB线和电源", "check the modem's USB cable and power"),
    ("modem", "silent"): ("短信模块无应答：检查端口、波特率和电源",
                          "the modem does not answer: check port, baud rate, power supply"),
    ("modem", "sim_missing"): ("插入SIM卡", "insert the SIM card"),
    ("modem", "sim_pin"): ("设置 [modem] sim_pin，或在手机上取消PIN码",
                           "set [modem] sim_pin, or remove the PIN in a phone"),
    ("modem", "not_registered"): ("无网络注册：检查天线和SIM卡服务",
                                  "not registered: check the antenna and the SIM's service"),
    ("modem", "signal_low"): ("信号弱：把天线移到金属箱外",
                              "weak signal: move the antenna outside any metal box"),
    ("modem", "smsc_empty"): ("设置 [modem] smsc 短信中心号码",
                              "set [modem] smsc, the SMS centre number"),
    ("uplink", "unreachable"): ("平台无法连接：检查网络；报警改由短信发送",
                                "platform unreachable: check the network; alarms go by SMS"),
    ("uplink", "misconfigured"): ("检查令牌文件和 [uplink] url",
                                  "check the token file and [uplink] url"),
    ("uplink", "rejected"): ("平台拒收事件：检查令牌和网址",
                             "the platform refused an event: check the token and URL"),
    ("storage", "low_space"): ("存储空间不足：减少保留天数或换大卡",
                               "low space: lower retention, or use a bigger card"),
    ("storage", "corrupt"): ("数据库已损坏并另存，已重新开始",
                             "the database was corrupt, moved aside and started afresh"),
    ("clock", "not_synchronised"): ("时钟未同步：检查网络和NTP",
                                    "clock not synchronised: check the network and NTP"),
}
BY_PART: dict[str, Advice] = {
    "modem": ("检查短信模块、SIM卡和天线", "check the modem, the SIM card and the antenna"),
    "camera": ("检查摄像头排线；运行 edge-alarm check", "check the camera's cable; run "
                                                   "edge-alarm check"),
    "uplink": ("检查网络和平台设置", "check the network and the platform settings"),
    "storage": ("检查SD卡：运行 edge-alarm check", "check the SD card: run edge-alarm check"),
    "clock": ("检查网络和NTP", "check the network and NTP"),
    "siren": ("检查警号继电器接线", "check the siren relay's wiring"),
    "indicator": ("检查指示灯接线", "check the lamp's wiring"),
    "control": ("重启 edge-alarm 服务", "restart the edge-alarm service"),
}
INPUT_ADVICE: Advice = ("检查该输入的接线，然后运行 edge-alarm check",
                        "check this input's wiring, then run edge-alarm check")


def advice(part: str, reason: str) -> Advice:
    """What to do about ``part`` failing for ``reason`` (an input's name: its wiring)."""
    return BY_REASON.get((part, reason)) or BY_PART.get(part) or INPUT_ADVICE

"""`edge-alarm web`: the guard-room page, a web server in a process of its own. It reads the
store read-only and speaks to the daemon only over the control socket, so a bug or a flood
here can never stall the alarm path.

auth.py the password, sessions and login limits; view.py the page's document (the daemon's
status and the day's events); advice.py what to do about each fault; server.py the HTTP
side (aiohttp, imported only by this command); static/ the page itself.
"""

"""SIA DC-09 (ANSI/SIA DC-09-2013) to an alarm receiving centre: crypto.py the AES key and
cipher, frame.py the messages and the receiver's answers, contact_id.py our kinds as
Ademco Contact ID codes, link.py the TCP or UDP link with its bounded reads,
transmitter.py one message's exchange (a NAK answered by a resend on the receiver's
time), worker.py the transport: the store's delivery rows in order, retries, NULL
supervision, the `sia` fault."""

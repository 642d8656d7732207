"""Weekly reports: which organizations were active (``build``), what their report says
(``build``), how it reads as an email (``render``), and sending it once per member
(``send``). ``jobs`` wires them to the weekly schedule and the job agents."""

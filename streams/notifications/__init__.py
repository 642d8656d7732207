"""Activity notifications: an activity on an issue (a note, an assignment, a resolution)
mails each participant except the actor, once. ``activity`` records activities and
schedules the job, ``send`` decides recipients and sends, ``render`` writes the mail,
``jobs`` declares the job."""

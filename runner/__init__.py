"""Running studies: one study's path read -> check -> segment -> write (pipeline), a cohort's scheduling with
read-ahead and kept outputs (cohort), parts and ranks (distributed), Ctrl-C (interrupts) and whether this
Python can run at all (environment). Imports model/, studies/ and results/."""

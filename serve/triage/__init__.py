"""Inspector triage: the queue database, sign-in and roles, outcomes, audit trail and exports."""

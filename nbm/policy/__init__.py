"""The decision policy: eligibility, contact policy, arbitration and exploration (issue 6; in progress)."""

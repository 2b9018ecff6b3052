-- zhizao OEE (issue 11): repair time and material stops per window, per-site microstop threshold and
-- startup-reject period. Only adds columns with defaults, so older rows stay readable (their material
-- stops are inside loss_failure_s and their repair time reads as 0) and applying it twice is harmless.

-- Time inside failure stops (for MTTR = repair_s / failures) and jams and other material stops as a loss
-- class of their own (no longer inside loss_failure_s or loss_minor_s).
ALTER TABLE oee_windows ADD COLUMN IF NOT EXISTS repair_s double precision NOT NULL DEFAULT 0;
ALTER TABLE oee_windows ADD COLUMN IF NOT EXISTS loss_material_s double precision NOT NULL DEFAULT 0;

-- A stop shorter than microstop_s is a microstop; rejects within startup_s after a restart are startup
-- rejects. The defaults are what every site had before these columns existed.
ALTER TABLE oee_site_config ADD COLUMN IF NOT EXISTS microstop_s double precision NOT NULL DEFAULT 120
    CHECK (microstop_s >= 0 AND microstop_s <= 86400);
ALTER TABLE oee_site_config ADD COLUMN IF NOT EXISTS startup_s double precision NOT NULL DEFAULT 0
    CHECK (startup_s >= 0 AND startup_s <= 86400);

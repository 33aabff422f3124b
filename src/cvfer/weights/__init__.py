"""Weights cvfer trained for itself and ships: the synthetic face recognisers MIC's f_I and TFEN's F read when
told "synthetic" (`cvfer.train.identity`), with `weights.json` recording how each was made and how well it
verifies held-out identities. `cvfer weights retrain` writes them again."""

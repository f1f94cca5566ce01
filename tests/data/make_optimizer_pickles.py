"""Make optimizer pickles with one build of fastopt and the bits of their next step."""
import pickle, sys
import numpy as np
import fastopt
rng = np.random.default_rng(7)
cases = {}
def grads_for(params):
    r = np.random.default_rng(11)
    if isinstance(params, dict):
        return {k: r.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()}
    return [r.standard_normal(p.shape).astype(p.dtype) for p in params]
# list, float32 + float64, dense
P = [rng.standard_normal(300).astype(np.float32), rng.standard_normal(7)]
cases["list_dense"] = fastopt.Adam(P, lr=1e-2, max_grad_norm=1.0)
# dict with groups, int8
D = {"W": rng.standard_normal(600).astype(np.float32), "b": np.ones(3, np.float32)}
cases["dict_int8_groups"] = fastopt.AdamW(D, lr=1e-2, state_dtype="int8", min_lowbit_size=256,
                                          groups=[{"params": ["b"], "weight_decay": 0.0}])
# FlatParams, bfloat16, groups
fp = fastopt.FlatParams({"w1": (30, 20), "b1": (20,), "w2": (20, 30)})
fp.data[:] = rng.standard_normal(fp.data.size).astype(np.float32)
cases["flat_bf16_groups"] = fastopt.SGD(fp, lr=1e-2, momentum=0.9, state_dtype="bfloat16", min_lowbit_size=100,
                                        groups=[{"params": ["b1"], "lr": 0.1}])
cases["flat_rmsprop"] = fastopt.RMSprop(fastopt.FlatParams({"a": (50,)}), lr=1e-2)
out = {}
for name, opt in cases.items():
    ps = opt.params.flat if opt.params.flat is not None else (
        dict(zip(opt.params.keys, opt.params)) if opt.params.keys is not None else list(opt.params))
    for _ in range(2):
        if opt.params.flat is not None:
            opt.params.flat.grad[:] = np.random.default_rng(3).standard_normal(opt.params.flat.grad.size)
            opt.step()
        else:
            opt.step(grads_for(ps))
    blob = pickle.dumps(opt)
    # the next step here: the bits a loaded copy must reproduce
    if opt.params.flat is not None:
        opt.step()
        after = opt.params.flat.data.copy()
    else:
        opt.step(grads_for(ps))
        after = [p.copy() for p in opt.params]
    out[name] = (blob, after)
with open(sys.argv[1], "wb") as f:
    pickle.dump(out, f)

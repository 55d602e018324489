"""Throwaway GPU diagnostic (not committed): where the fp8 weight copy's transposed layout goes wrong."""
import torch, triton
from kernels import fp8, conv
import os
dev = "cuda" if torch.cuda.is_available() else "cpu"
print(torch.__version__, triton.__version__)
torch.manual_seed(0)
for shape, dt in [((16, 40, 3, 3), torch.float32), ((16, 40, 3, 3), torch.float16), ((48, 40, 3, 3), torch.float32),
                  ((40, 32, 3, 3), torch.float32), ((64, 64, 3, 3), torch.float16), ((64, 64, 3, 3), torch.float32),
                  ((256, 64, 3, 3), torch.float16)]:
    CO, CI, KH, KW = shape
    w = (torch.randn(shape, device=dev) * 0.3).to(dt).contiguous(memory_format=torch.channels_last)
    t = conv._weight_cl(w)
    for trial in range(2):
        st = fp8.DelayedScale(w.device)
        st.init(t)
        N = t.numel()
        q = torch.full((N,), 0x55, device=dev, dtype=torch.uint8).view(fp8.E4M3)
        qt = torch.full((N,), 0x55, device=dev, dtype=torch.uint8).view(fp8.E4M3)
        s = torch.empty(1, device=dev)
        meta = dict(FMAX=448.0, E5=False, TRANSPOSED=True, D0=CO, D1=KH * KW, D2=CI, BLOCK=1024, num_warps=4)
        fp8._quantize_kernel[(triton.cdiv(N, 1024),)](t, q, qt, st.amax, s, st.ticket, st.nonfinite, N, **meta)
        torch.cuda.synchronize() if dev == "cuda" else None
        qb = q.view(torch.uint8).view(CO, KH * KW * CI)
        qtb = qt.view(torch.uint8)
        want = qb.t().contiguous().view(-1)
        bad = (qtb != want).nonzero().flatten()
        nq = (q.float().isnan()).sum().item(); nqt = (qt.float().isnan()).sum().item()
        unw = (qtb == 0x55).sum().item() - (want == 0x55).sum().item()
        print(shape, dt, "trial", trial, "scale", s.item(), "q NaN", nq, "qt NaN", nqt, "qt mismatches", bad.numel(),
              "unwritten-ish", unw, "first bad", bad[:8].tolist(), "got", qtb[bad[:8]].tolist(), "want", want[bad[:8]].tolist())
        # through the public path
        q2, s2, qt2 = fp8.quantize(t, fp8.E4M3, fp8.DelayedScale(w.device), transposed=(CO, KH * KW, CI))
        print("   quantize(): qt NaN", qt2.float().isnan().sum().item(), "q NaN", q2.float().isnan().sum().item(),
              "qt==q.T", torch.equal(qt2.view(torch.uint8), q2.view(torch.uint8).permute(0, 2, 3, 1).reshape(CO, -1).t().contiguous().view(-1)))
    y, wqt, s_w = conv.conv2d_fp8_fwd(torch.randn(2, CI, 5, 5, device=dev, dtype=torch.float16 if dt == torch.float16 else torch.float32).contiguous(memory_format=torch.channels_last), w, None, 1, 0)
    print("   conv2d_fp8_fwd: wqt NaN", wqt.float().isnan().sum().item(), "y NaN", y.float().isnan().sum().item(), "s_w", s_w.item(), wqt.shape, wqt.stride())

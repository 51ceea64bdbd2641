# perf/soak.sh's verdict: is each series flat after warm-up? (awk -v warm=SECONDS -f soak-flat.awk CSV)
# Judged on five-minute medians, max/min <= 1.10: a leak drifts from window to window, while a
# single sample's spike (a collection, a burst of 100 KiB messages in flight) is gone ten seconds
# later. Every sample's min and max are printed beside. RSS, descriptors and the relay's own
# threads are judged; the spool's size (it follows the retry backlog) and the thread pool's
# workers (the runtime adds and retires them with the load) are shown only. Columns:
# elapsed_s,rss_kib,fds,threads,spool_bytes,queued[,pool_workers[,delivery_log_bytes]] (the
# spool's size is its queue log and commits; older runs' CSVs counted the delivery log in it).
BEGIN { FS = ","; split("2 3 4 5 7", cols, " "); split("rss_kib fds threads spool_bytes pool_workers", names, " ") }
NR > 1 && $1 >= warm {
  w = int(($1 - warm) / 300)
  if (w > last) last = w
  for (i = 1; i <= 5; i++) {
    c = cols[i]; if (c > NF) continue
    k = ++n[c, w]; v[c, w, k] = $c + 0
    if (!((c) in lo) || $c + 0 < lo[c]) lo[c] = $c + 0
    if ($c + 0 > hi[c]) hi[c] = $c + 0
  }
}
function median(c, w,   k, i, j, t, a) {
  k = n[c, w]; for (i = 1; i <= k; i++) a[i] = v[c, w, i]
  for (i = 2; i <= k; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
  return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
}
END {
  for (i = 1; i <= 5; i++) {
    c = cols[i]; if (!((c) in lo)) continue
    mlo = ""; mhi = 0; list = ""
    for (w = 0; w <= last; w++) {
      if (n[c, w] < 3) continue   # a last window of one or two samples says little
      m = median(c, w); list = list (list == "" ? "" : " ") sprintf("%.0f", m)
      if (mlo == "" || m < mlo) mlo = m
      if (m > mhi) mhi = m
    }
    ratio = mlo > 0 ? mhi / mlo : 0
    verdict = c >= 5 ? "(shown only)" : ratio <= 1.10 ? "flat" : "NOT FLAT"
    printf "after warm-up (%d s): %-12s samples min %.0f max %.0f; 5-minute medians %s (max/min %.3f) %s\n", warm, names[i], lo[c], hi[c], list, ratio, verdict
  }
}

using System.Reflection;
using System.Runtime.CompilerServices;
using FASTER.core;
using NativeRelay.Telemetry;

namespace NativeRelay.Spool;

/// <summary>
/// Makes FasterLog close its oldest in-memory page one page turn early, so the appender that turns
/// to a new page does not wait for the close it has just asked for (while the disk keeps up).
/// </summary>
/// <remarks>
/// FasterLog keeps a ring of pages in memory. When an append fills the tail page, it moves the
/// log's head on so the oldest page can be reused, and closes that page through an epoch action:
/// the action runs only once every thread inside the log (other appenders copying their records
/// in, the group commit) has left it or refreshed its epoch. With the head lagging the tail by the
/// whole ring less one page (FASTER's default), the page being turned to is the very page that
/// must first be closed, so the thread that turns the page spins in <c>TryAllocateRetryNow</c>,
/// scanning the epoch table again and again, until the others leave. On two cores a thread inside
/// the log may be waiting for the core that spins, so one such spin can last a scheduler slice.
/// At 100 KiB messages (a page turn every ten messages) FasterLog's own code was 33 % of the
/// relay's samples, most of it that spin; with one page of headroom it is 10 %, and the relay's
/// CPU per message fell from 170-192 to 138-167 µs (perf/RESULTS.md). At 1 KiB, with a page turn
/// every thousand messages, it makes no difference.
/// <para>
/// One empty page means the close a page turn needs is the one asked for at the turn before, long
/// since done. It costs one page of the ring: the oldest, which only holds records already on the
/// disk, kept in memory for reads. FasterLog's settings do not offer it (its allocator's
/// <c>EmptyPageCount</c> is internal), so the head's lag is set on the allocator directly; the
/// allocator is found by reflection on a field named at compile time, which native AOT keeps.
/// If a FASTER upgrade moves either, the spool still opens, with a warning, and only this gain
/// is lost. The accessor trusts the allocator to be FASTER's <c>AllocatorBase</c>, as it is in the
/// pinned version (2.6.5): whoever upgrades FASTER re-reads <c>AllocatorBase.TryAllocate</c> and
/// runs <c>SpoolLogTests</c>, which fail if the lag is not where this expects it.
/// </para>
/// </remarks>
internal static class PageTurnHeadroom
{
    private const string AllocatorBase =
        "FASTER.core.AllocatorBase`2[[FASTER.core.Empty, FASTER.core],[System.Byte, System.Private.CoreLib]], FASTER.core";

    /// <summary>
    /// The smallest ring it applies to (rings are powers of two): a ring of two pages is left as
    /// FASTER has it, with its head a page behind the tail.
    /// </summary>
    public const int MinRingPages = 4;

    /// <summary>
    /// Gives the log one page of headroom. <paramref name="ringPages"/> is the ring the log was
    /// made with (memory size over page size). Returns false when it did not: a ring too small (no
    /// warning: nothing is wrong), or an allocator that does not hold FASTER's default lag where
    /// this expects it, or any failure to reach it (a warning; the spool works on without).
    /// </summary>
    public static bool Apply(FasterLog log, long ringPages, Log logger)
    {
        try
        {
            if (ringPages < MinRingPages)
                return false;
            int pageBits = log.UnsafeGetLogPageSizeBits();
            ref long lag = ref HeadOffsetLagAddress(AllocatorOf(log));
            // The accessor cannot check the allocator's type: the exact default lag (the ring less
            // one page) read back is the sign that the field is what this expects, before writing.
            long expected = (ringPages - 1) << pageBits;
            if (lag != expected)
            {
                logger.Warn($"spool: FasterLog's head lag reads {lag} bytes, not the {expected} expected; left as it is (appends at page turns may spin)");
                return false;
            }

            lag = expected - (1L << pageBits);
            return true;
        }
        catch (Exception e)
        {
            // Only a gain is lost: the log is whole and opens as FASTER made it.
            logger.Warn($"spool: cannot give FasterLog's page ring its headroom ({e.GetType().Name}: {e.Message}); appends at page turns may spin");
            return false;
        }
    }

    /// <summary>How many pages the log's head lags its tail by (for tests and diagnostics).</summary>
    public static long HeadLagPages(FasterLog log) =>
        HeadOffsetLagAddress(AllocatorOf(log)) >> log.UnsafeGetLogPageSizeBits();

    // A field named by a constant on a type known at compile time: native AOT keeps its metadata
    // (an UnsafeAccessor for it, typed through UnsafeAccessorType, throws NotSupportedException
    // under native AOT in .NET 10).
    private static object AllocatorOf(FasterLog log) =>
        typeof(FasterLog).GetField("allocator", BindingFlags.NonPublic | BindingFlags.Instance)?.GetValue(log)
        ?? throw new MissingFieldException("FASTER.core.FasterLog", "allocator");

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "HeadOffsetLagAddress")]
    private static extern ref long HeadOffsetLagAddress([UnsafeAccessorType(AllocatorBase)] object allocator);
}

using System.Text;
using NativeRelay.Telemetry;
using NativeRelay.Traffic.Suppression;

namespace NativeRelay.Control;

/// <summary>
/// The control socket's <c>suppress-*</c> commands (<c>nativerelay suppress ...</c>): every change
/// is committed (fsynced) before the answer, so an entry the CLI reports as added survives kill -9.
/// </summary>
internal static class SuppressionCommands
{
    /// <summary>An import stops reading after this many lines (a million-entry list is the design size).</summary>
    private const int MaxImportLines = 10_000_000;
    private const int MaxProblemsShown = 10;

    public static async Task HandleAsync(ControlRequest request, Stream stream, SuppressionList? list, Log log,
        Func<Stream, ControlResponse, Task> write, CancellationToken stopping)
    {
        if (list is null)
        {
            await write(stream, new ControlResponse { Done = true, Error = "this relay keeps no suppression list (suppression.enabled is false)" });
            return;
        }
        if (!SuppressionScope.TryParse(request.Scope, out var scope, out var scopeError))
        {
            await write(stream, new ControlResponse { Done = true, Error = scopeError });
            return;
        }
        string reason = string.IsNullOrWhiteSpace(request.Reason) ? "added by the administrator" : request.Reason.Trim();
        switch (request.Command)
        {
            case ControlProtocol.Commands.SuppressAdd:
            case ControlProtocol.Commands.SuppressRemove:
            {
                bool add = request.Command == ControlProtocol.Commands.SuppressAdd;
                if (request.Addresses is not { Count: > 0 } addresses)
                {
                    await write(stream, new ControlResponse { Done = true, Error = $"{request.Command} needs at least one address" });
                    return;
                }
                var bad = addresses.FirstOrDefault(a => !IsAddress(a));
                if (bad is not null)
                {
                    await write(stream, new ControlResponse { Done = true, Error = $"'{bad}' is not an address (user@domain)" });
                    return;
                }
                long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                int changed = 0;
                foreach (var a in addresses)
                {
                    var bytes = Encoding.UTF8.GetBytes(a.Trim());
                    if (add ? list.TryAdd(bytes, scope, reason, now) : list.Remove(bytes, scope))
                        changed++;
                }
                list.Commit();
                if (!add)
                    list.CompactIfWorthIt();
                log.Info($"control socket: suppress {(add ? "add" : "remove")} ({scope}): {changed} of {addresses.Count} address(es) {(add ? "added" : "removed")}");
                await write(stream, new ControlResponse { Done = true, Ok = true, Count = changed, Unchanged = addresses.Count - changed });
                return;
            }
            case ControlProtocol.Commands.SuppressList:
            {
                int count = 0;
                foreach (var e in list.Entries(request.Scope is null ? null : scope))
                {
                    await write(stream, new ControlResponse
                    {
                        Suppression = new ControlSuppression { Address = e.Address, Scope = e.Scope, AddedUnixMs = e.AddedUnixMs, Reason = e.Reason.Length == 0 ? null : e.Reason },
                    });
                    count++;
                }
                if (count >= SuppressionList.BigList)
                    SuppressionList.CollectOnce(); // a big listing's decoded records, given back
                await write(stream, new ControlResponse { Done = true, Ok = true, Count = count });
                return;
            }
            case ControlProtocol.Commands.SuppressImport:
                await ImportAsync(stream, list, scope, reason, log, write, stopping);
                return;
            default:
                await write(stream, new ControlResponse { Done = true, Error = $"unknown command '{request.Command}'" });
                return;
        }
    }

    private static async Task ImportAsync(Stream stream, SuppressionList list, SuppressionScope scope, string reason, Log log,
        Func<Stream, ControlResponse, Task> write, CancellationToken stopping)
    {
        await write(stream, new ControlResponse { Ready = true });
        using var reader = new StreamReader(stream, new UTF8Encoding(false), detectEncodingFromByteOrderMarks: false, bufferSize: 1 << 16, leaveOpen: true);
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        int lines = 0, added = 0, unchanged = 0;
        var problems = new List<string>();
        while (await reader.ReadLineAsync(stopping) is { } line)
        {
            if (++lines > MaxImportLines)
            {
                problems.Add($"stopped after {MaxImportLines} lines");
                break;
            }
            // One address a line; anything after it (a comma, a tab, a space) and # comments are ignored.
            var text = line.AsSpan().Trim();
            if (text.IsEmpty || text[0] == '#')
                continue;
            int end = text.IndexOfAny(" \t,;");
            var address = (end < 0 ? text : text[..end]).ToString();
            if (!IsAddress(address))
            {
                unchanged++;
                if (problems.Count < MaxProblemsShown)
                    problems.Add($"line {lines}: '{(address.Length > 80 ? address[..80] + "..." : address)}' is not an address");
                continue;
            }
            if (list.TryAdd(Encoding.UTF8.GetBytes(address), scope, reason, now))
                added++;
            else
                unchanged++;
        }
        list.Commit();
        // A big import doubled the table a few times: the old arrays (half the new one's size in
        // all) are garbage the GC would keep committed for a while. One compacting collection,
        // once per big import, gives the memory back (an admin action, not the message path).
        if (added >= SuppressionList.BigList)
            SuppressionList.CollectOnce();
        log.Info($"control socket: suppress import ({scope}): {added} address(es) added, {unchanged} unchanged or malformed, from {lines} line(s)");
        await write(stream, new ControlResponse { Done = true, Ok = true, Count = added, Unchanged = unchanged, Problems = problems.Count == 0 ? null : problems });
    }

    /// <summary>user@domain with no spaces or control characters (what the list can hold).</summary>
    internal static bool IsAddress(string? text)
    {
        text = text?.Trim();
        if (string.IsNullOrEmpty(text))
            return false;
        int at = text.LastIndexOf('@');
        return at > 0 && at < text.Length - 1 && SuppressionList.IsValidAddress(Encoding.UTF8.GetBytes(text));
    }
}

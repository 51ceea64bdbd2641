using System.Text;
using NativeRelay.Delivery;
using NativeRelay.Interop;
using NativeRelay.Local;
using NativeRelay.Message;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Maildrop;

/// <summary>
/// Takes the messages <c>sendmail</c> left in the maildrop (<see cref="MaildropDirectory"/>) into
/// the queue, at start and then every second, each file exactly once:
/// <list type="number">
/// <item>the file is renamed to <c>NAME.QUEUEID</c> (the id it is about to get), and the rename made durable;</item>
/// <item>the message is appended to the spool under that id and the commit awaited;</item>
/// <item>the file is removed (durably); only then does delivery see the message.</item>
/// </list>
/// After a crash, <see cref="ResolveInterrupted"/> (before delivery starts) removes every
/// <c>NAME.QUEUEID</c> file whose id the spool recovered: that message is queued already. Any
/// other file is picked up (again, under the id in its name): its message never reached the spool.
/// Since delivery starts only after step 3, a message can neither be lost nor queued twice.
/// <para>
/// A file that is not a well-formed maildrop file (or is a link, a FIFO, too large, ...) is moved
/// into <c>maildrop/bad/</c> with a log line and the others go on. A spool that refuses mail
/// (full disk) leaves the file where it is for the next round.
/// </para>
/// </summary>
public sealed class MaildropPickup : IAsyncDisposable
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);

    /// <summary>A temporary file this old was abandoned by a sendmail that died before it finished (and so did not report success).</summary>
    private static readonly TimeSpan AbandonedAfter = TimeSpan.FromDays(1);

    private readonly string _directory;
    private readonly SpoolLog _spool;
    private readonly QueueIdGenerator _ids;
    private readonly IQueueIntake _intake;
    private readonly string _hostname;
    private readonly long _maxMessageSize;
    private readonly Log _log;
    private readonly CancellationTokenSource _stop = new();
    private Task? _loop;

    public MaildropPickup(string spoolDirectory, SpoolLog spool, QueueIdGenerator ids, IQueueIntake intake, string hostname, long maxMessageSize, Log log)
    {
        _directory = MaildropDirectory.Ensure(spoolDirectory);
        _spool = spool;
        _ids = ids;
        _intake = intake;
        _hostname = hostname;
        _maxMessageSize = maxMessageSize;
        _log = log;
    }

    public string Directory => _directory;

    /// <summary>Where reception events go (the null publisher when no webhook is configured).</summary>
    public NativeRelay.Events.IEventPublisher Events { get; init; } = NativeRelay.Events.NullEventPublisher.Instance;

    /// <summary>Before delivery starts: drops the files whose messages the spool already holds (step 2 done, step 3 not).</summary>
    public void ResolveInterrupted(IReadOnlySet<ulong> recovered)
    {
        bool removed = false;
        foreach (var path in System.IO.Directory.EnumerateFiles(_directory))
        {
            if (TryParseName(Path.GetFileName(path), out _, out ulong id) && id != 0 && recovered.Contains(id))
            {
                File.Delete(path);
                removed = true;
                _log.Info($"{new QueueIdText(id)}: maildrop file {Path.GetFileName(path)} was queued before the restart; removed");
            }
        }
        if (removed)
            MaildirWriter.FsyncDirectory(_directory);
    }

    public void Start() => _loop = RunAsync(_stop.Token);

    private async Task RunAsync(CancellationToken stop)
    {
        using var timer = new PeriodicTimer(Interval);
        do
        {
            try
            {
                await PickUpAllAsync(stop);
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                // The maildrop itself unreadable (removed, permissions): say so, try again next round.
                _log.Warn($"maildrop {_directory}: {ExceptionText.Of(e)}");
            }
        }
        while (await WaitAsync(timer, stop));
    }

    private static async Task<bool> WaitAsync(PeriodicTimer timer, CancellationToken stop)
    {
        try
        {
            return await timer.WaitForNextTickAsync(stop);
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>One pass over the maildrop; returns how many messages were queued.</summary>
    public async Task<int> PickUpAllAsync(CancellationToken stop)
    {
        int queued = 0;
        foreach (var path in System.IO.Directory.EnumerateFiles(_directory).Order(StringComparer.Ordinal).ToList())
        {
            stop.ThrowIfCancellationRequested();
            string name = Path.GetFileName(path);
            if (name.StartsWith(MaildropDirectory.TempPrefix, StringComparison.Ordinal))
            {
                RemoveIfAbandoned(path);
                continue;
            }
            if (!TryParseName(name, out string random, out ulong id))
            {
                MoveAside(path, "its name is not one sendmail gives");
                continue;
            }
            switch (await PickUpAsync(path, random, id))
            {
                case Outcome.Queued:
                    queued++;
                    break;
                case Outcome.SpoolRefused:
                    return queued; // the rest waits for the next round, as this one does
            }
        }
        return queued;
    }

    private enum Outcome { Queued, MovedAside, SpoolRefused, Gone }

    private async Task<Outcome> PickUpAsync(string path, string random, ulong id)
    {
        byte[] content;
        uint uid;
        using (var file = FileOwner.OpenNoFollow(path, out int errno))
        {
            if (file is null)
            {
                if (errno == 2) // ENOENT: removed meanwhile
                    return Outcome.Gone;
                MoveAside(path, errno == 40 ? "it is a symbolic link" : $"it cannot be opened (errno {errno})");
                return Outcome.MovedAside;
            }
            var facts = FileOwner.Stat(file);
            if (!facts.IsRegularFile || facts.LinkCount != 1)
            {
                MoveAside(path, facts.IsRegularFile ? "it has more than one name (a hard link)" : "it is not a regular file");
                return Outcome.MovedAside;
            }
            if (facts.Size > _maxMessageSize + 64 * 1024)
            {
                MoveAside(path, $"it is larger ({facts.Size} bytes) than limits.maxMessageSize");
                return Outcome.MovedAside;
            }
            uid = facts.Uid;
            content = new byte[facts.Size];
            using var stream = new FileStream(file, FileAccess.Read, 1);
            stream.ReadExactly(content);
        }
        if (!MaildropFile.TryParse(content, out var entry, out string error))
        {
            MoveAside(path, error);
            return Outcome.MovedAside;
        }
        string user = FileOwner.UserName(uid) ?? "unknown";

        // Step 1: the id goes into the name before the message goes into the spool.
        if (id == 0)
        {
            id = _ids.Next();
            string taken = Path.Combine(_directory, $"{random}.{QueueIdGenerator.ToString(id)}");
            File.Move(path, taken);
            MaildirWriter.FsyncDirectory(_directory);
            path = taken;
        }

        var envelope = new Envelope
        {
            Sender = Encoding.UTF8.GetBytes(entry!.Sender),
            Recipients = entry.Recipients.Select(Encoding.UTF8.GetBytes).ToArray(),
            ClientAddress = "local",
            HeloName = _hostname,
            ArrivalUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
            Flags = (entry.EightBit ? EnvelopeFlags.EightBitMime : EnvelopeFlags.None)
                    | (entry.Recipients.Append(entry.Sender).Any(a => !Ascii.IsValid(a)) ? EnvelopeFlags.SmtpUtf8 : EnvelopeFlags.None),
        };
        var body = MessageBuffer.Rent();
        body.Write(Encoding.UTF8.GetBytes(ReceivedLine(user, uid, id, DateTimeOffset.FromUnixTimeMilliseconds(envelope.ArrivalUnixMs))));
        body.Write(entry.Message.Span);

        // Step 2: durable in the spool, once delivery has room for more new mail (inflow control,
        // as Postfix's pickup waits for cleanup's token).
        await _intake.WaitForInFlowRoomAsync();
        long head, first;
        _intake.ReserveSpool(id);
        try
        {
            (head, first) = await _spool.AppendMessageAsync(id, envelope, body);
            // As a session does: the reception events' commit runs beside the spool's, and the
            // file goes only when both are durable.
            NativeRelay.Events.MessageEvents.PublishReception(Events, id, envelope, body.FirstBlockContent());
            var events = Events.DurableAsync();
            await _spool.WaitForCommitAsync(head);
            await events;
        }
        catch (Exception e)
        {
            _intake.CancelReservation(id);
            body.Release();
            _log.Warn($"{new QueueIdText(id)}: maildrop file left for later: the spool refused it: {ExceptionText.Of(e)}");
            return Outcome.SpoolRefused;
        }

        // Step 3: the file goes, then delivery may start.
        File.Delete(path);
        MaildirWriter.FsyncDirectory(_directory);
        _log.Info($"{new QueueIdText(id)}: queued from={envelope.SenderForLog} rcpts={envelope.Recipients.Length} size={body.ContentLength} maildrop user={user}");
        await _intake.EnqueueAsync(new QueuedMessage
        {
            Id = id,
            HeadAddress = head,
            FirstAddress = first,
            Envelope = envelope,
            Recipients = new RecipientState[envelope.Recipients.Length],
            Body = body, // the queue takes the reference
            Size = body.ContentLength,
        });
        return Outcome.Queued;
    }

    /// <summary>
    /// "Received: by HOST (NativeRelay maildrop, from user NAME uid N) id ID; DATE", as Postfix's
    /// pickup writes "from userid N". The name comes from the file's owner, so it cannot be forged.
    /// </summary>
    internal string ReceivedLine(string user, uint uid, ulong id, DateTimeOffset at)
    {
        Span<byte> date = stackalloc byte[Rfc5322Date.MaxLength];
        int n = Rfc5322Date.Write(at, date);
        string safeUser = new(user.Where(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-' or '$').Take(64).ToArray());
        return $"Received: by {_hostname} (NativeRelay maildrop, from user {(safeUser.Length == 0 ? "unknown" : safeUser)} uid {uid})\r\n"
               + $"\tid {QueueIdGenerator.ToString(id)}; {Encoding.ASCII.GetString(date[..n])}\r\n";
    }

    /// <summary>NAME (32 lower-case hex digits) or NAME.QUEUEID (id taken before a crash); id 0 for the first.</summary>
    internal static bool TryParseName(string fileName, out string random, out ulong id)
    {
        id = 0;
        random = fileName;
        int dot = fileName.IndexOf('.');
        if (dot >= 0)
        {
            random = fileName[..dot];
            if (!QueueIdGenerator.TryParse(fileName[(dot + 1)..], out id) || id == 0)
                return false;
        }
        return random.Length == 32 && random.All(c => char.IsAsciiHexDigitLower(c) || char.IsAsciiDigit(c));
    }

    private void RemoveIfAbandoned(string path)
    {
        try
        {
            if (DateTime.UtcNow - File.GetLastWriteTimeUtc(path) > AbandonedAfter)
            {
                File.Delete(path);
                _log.Info($"maildrop: removed {Path.GetFileName(path)}, left unfinished by a sendmail that stopped more than a day ago");
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    /// <summary>Moves a file that cannot be queued into maildrop/bad/ (never deleted: an operator looks at it).</summary>
    private void MoveAside(string path, string reason)
    {
        if (OperatingSystem.IsWindows())
            return;
        string bad = Path.Combine(_directory, "bad");
        string name = Path.GetFileName(path);
        try
        {
            System.IO.Directory.CreateDirectory(bad, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            string target = Path.Combine(bad, name);
            if (File.Exists(target))
                target += "." + DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            File.Move(path, target);
            MaildirWriter.FsyncDirectory(_directory);
            _log.Warn($"maildrop: moved {name} to {target}: {reason}");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _log.Warn($"maildrop: cannot move {name} aside ({reason}): {ExceptionText.Of(e)}");
        }
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        if (_loop is not null)
            await _loop;
        _stop.Dispose();
    }
}

using NativeRelay.Routing;

namespace NativeRelay.Delivery;

/// <summary>A message on its way into a loop, with the route the scheduler resolved for it.</summary>
internal readonly record struct DeliveryJob(QueuedMessage Message, Route Route);

using HyperSd.Contracts;
using MassTransit;

namespace HyperSd.Workers.Orchestrator;

/// <summary>Sends the commands a committed transition produced, each to its role's queue.</summary>
public static class StageDispatchSender
{
    public static async Task SendAsync(this ISendEndpointProvider provider, IReadOnlyList<StageDispatch> dispatches, CancellationToken ct = default)
    {
        foreach (var d in dispatches)
        {
            var endpoint = await provider.GetSendEndpoint(Roles.Queue(d.Role));
            await endpoint.Send((object)d.Command, ct);
        }
    }
}

/// <summary>StartRun, CancelRun, ResumeRun.</summary>
public sealed class RunCommandsConsumer(RunStateMachine machine) :
    IConsumer<StartRun>, IConsumer<CancelRun>, IConsumer<ResumeRun>
{
    public async Task Consume(ConsumeContext<StartRun> context) =>
        await context.SendAsync(await machine.StartAsync(context.Message.RunId, DateTimeOffset.UtcNow, context.CancellationToken), context.CancellationToken);

    public async Task Consume(ConsumeContext<CancelRun> context) =>
        await context.SendAsync(await machine.CancelAsync(context.Message.RunId, context.Message.Reason, DateTimeOffset.UtcNow, context.CancellationToken), context.CancellationToken);

    public async Task Consume(ConsumeContext<ResumeRun> context) =>
        await context.SendAsync(await machine.ResumeAsync(context.Message.RunId, DateTimeOffset.UtcNow, context.CancellationToken), context.CancellationToken);
}

/// <summary>Every stage's completed and failed events.</summary>
public sealed class StageEventsConsumer(RunStateMachine machine) :
    IConsumer<DatasetPrepared>, IConsumer<TrajectoriesGenerated>, IConsumer<SegmentStageCompleted>, IConsumer<ModelEvaluated>,
    IConsumer<ImagesGenerated>, IConsumer<StageFailed>
{
    public Task Consume(ConsumeContext<DatasetPrepared> context) => Completed(context, context.Message);
    public Task Consume(ConsumeContext<TrajectoriesGenerated> context) => Completed(context, context.Message);
    public Task Consume(ConsumeContext<SegmentStageCompleted> context) => Completed(context, context.Message);
    public Task Consume(ConsumeContext<ModelEvaluated> context) => Completed(context, context.Message);
    public Task Consume(ConsumeContext<ImagesGenerated> context) => Completed(context, context.Message);

    public async Task Consume(ConsumeContext<StageFailed> context) =>
        await context.SendAsync(await machine.StageFailedAsync(context.Message, DateTimeOffset.UtcNow, context.CancellationToken), context.CancellationToken);

    async Task Completed(ConsumeContext context, IStageEvent e) =>
        await context.SendAsync(await machine.StageCompletedAsync(e, DateTimeOffset.UtcNow, context.CancellationToken), context.CancellationToken);
}

/// <summary>A stage consumer threw on its command (a corrupt input, a command for a stage that does not exist):
/// MassTransit moved the command to <c>&lt;queue&gt;_error</c> and published this fault; the stage and run fail.</summary>
public sealed class StageFaultsConsumer(RunStateMachine machine) :
    IConsumer<Fault<PrepareDataset>>, IConsumer<Fault<GenerateTrajectories>>, IConsumer<Fault<TrainSegmentStage>>, IConsumer<Fault<EvaluateModel>>,
    IConsumer<Fault<GenerateImages>>
{
    public Task Consume(ConsumeContext<Fault<PrepareDataset>> context) => Faulted(context, context.Message, context.Message.Message);
    public Task Consume(ConsumeContext<Fault<GenerateTrajectories>> context) => Faulted(context, context.Message, context.Message.Message);
    public Task Consume(ConsumeContext<Fault<TrainSegmentStage>> context) => Faulted(context, context.Message, context.Message.Message);
    public Task Consume(ConsumeContext<Fault<EvaluateModel>> context) => Faulted(context, context.Message, context.Message.Message);
    public Task Consume(ConsumeContext<Fault<GenerateImages>> context) => Faulted(context, context.Message, context.Message.Message);

    async Task Faulted(ConsumeContext context, Fault fault, IStageCommand command)
    {
        var error = string.Join("; ", fault.Exceptions.Select(e => $"{e.ExceptionType}: {e.Message}"));
        await context.SendAsync(await machine.StageFaultedAsync(command, error, DateTimeOffset.UtcNow, context.CancellationToken), context.CancellationToken);
    }
}

using System.Diagnostics;
using HyperSd.Distillation.Toy;

namespace HyperSd.Distillation.Tests.Toy;

/// <summary>One recognizer trained per test run, shared by the tests that need one.</summary>
public sealed class TrainedRecognizer : IDisposable
{
    public ToyRecognizer Model { get; }
    public TimeSpan TrainingTime { get; }
    public double FinalLoss { get; }

    public TrainedRecognizer()
    {
        var watch = Stopwatch.StartNew();
        double loss = double.NaN;
        Model = ToyRecognizerTrainer.Train(new ToyRecognizerTrainingOptions { Seed = 1 }, onStep: (_, l) => loss = l);
        TrainingTime = watch.Elapsed;
        FinalLoss = loss;
    }

    public void Dispose() => Model.Dispose();
}

[CollectionDefinition(Name)]
public sealed class TrainedRecognizerCollection : ICollectionFixture<TrainedRecognizer>
{
    public const string Name = "trained toy recognizer";
}

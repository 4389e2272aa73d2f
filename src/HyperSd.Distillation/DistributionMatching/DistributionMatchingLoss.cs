using static TorchSharp.torch;

namespace HyperSd.Distillation.DistributionMatching;

/// <summary>
/// DMD's distribution-matching gradient (DMD2's compute_distribution_matching_loss): the difference of the real and fake
/// scores at the noised generator output, as x̂0 predictions, normalised per sample by the real prediction's mean error,
/// and the surrogate loss whose gradient with respect to the generator output x is that gradient (divided by x's element
/// count, MSE's mean).
/// </summary>
public static class DistributionMatchingLoss
{
    /// <summary>grad = (p_real − p_fake) / mean_{C,H,W} |p_real| with p = x − x̂0, in float64; where it is not finite (a sample whose
    /// real prediction is exact: DMD2 takes nan_to_num) it is 0.</summary>
    public static Tensor Gradient(Tensor x, Tensor realX0, Tensor fakeX0)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var sample = x.detach().to(float64);
        var pReal = sample - realX0.to(float64);
        var pFake = sample - fakeX0.to(float64);
        long[] perSample = [.. Enumerable.Range(1, (int)sample.ndim - 1).Select(d => (long)d)];
        var grad = (pReal - pFake) / pReal.abs().mean(perSample, keepdim: true);
        return grad.nan_to_num(0, 0, 0).MoveToOuterDisposeScope();
    }

    /// <summary>0.5·MSE(x, stopgrad(x − grad)): its gradient with respect to x is grad / x.numel().</summary>
    public static Tensor Loss(Tensor x, Tensor gradient)
    {
        using var scope = NewDisposeScope();
        Tensor target;
        using (no_grad()) target = (x.detach().to(float64) - gradient).to(x.dtype);
        return (0.5 * nn.functional.mse_loss(x, target)).MoveToOuterDisposeScope();
    }
}

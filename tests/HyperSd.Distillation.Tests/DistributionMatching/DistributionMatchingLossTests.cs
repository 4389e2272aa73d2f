using HyperSd.Distillation.DistributionMatching;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.DistributionMatching;

public sealed class DistributionMatchingLossTests
{
    [Fact]
    public void The_gradient_is_the_score_difference_normalised_per_sample_by_the_real_error()
    {
        using var g = new Generator(3, CPU);
        using var x = randn([2, 3, 4, 4], generator: g);
        using var real = randn([2, 3, 4, 4], generator: g);
        using var fake = randn([2, 3, 4, 4], generator: g);
        using var grad = DistributionMatchingLoss.Gradient(x, real, fake);
        Assert.Equal(float64, grad.dtype);
        for (int i = 0; i < 2; i++)
        {
            double norm = (x[i].to(float64) - real[i].to(float64)).abs().mean().item<double>();
            using var expected = (fake[i].to(float64) - real[i].to(float64)) / norm; // p_real − p_fake = x̂0_fake − x̂0_real
            Assert.True(allclose(grad[i], expected, rtol: 1e-12, atol: 1e-12), $"sample {i}");
        }
        // scaling one sample's errors leaves its normalised gradient alone
        using var scaled = DistributionMatchingLoss.Gradient(x, x + (real - x) * 10, x + (fake - x) * 10);
        Assert.True(allclose(scaled, grad, rtol: 1e-4, atol: 1e-5)); // x + 10·(x̂0 − x) rounds in float32
    }

    [Fact]
    public void The_surrogate_loss_has_the_gradient_as_its_gradient()
    {
        using var g = new Generator(4, CPU);
        using var x = randn([2, 3, 4, 4], generator: g).requires_grad_(true);
        using var grad = DistributionMatchingLoss.Gradient(x, randn([2, 3, 4, 4], generator: g), randn([2, 3, 4, 4], generator: g));
        using var loss = DistributionMatchingLoss.Loss(x, grad);
        loss.backward();
        // 0.5·mean((x − (x − grad))²): its value is 0.5·mean(grad²) and d/dx = grad / numel, the target being stopped
        Assert.Equal(0.5 * grad.square().mean().item<double>(), loss.item<float>(), 5);
        Assert.True(allclose(x.grad!.to(float64) * x.numel(), grad, rtol: 1e-5, atol: 1e-6));
    }

    [Fact]
    public void A_sample_the_real_score_reproduces_exactly_gets_no_gradient_not_an_infinite_one()
    {
        using var x = ones([1, 2, 2, 2]);
        using var grad = DistributionMatchingLoss.Gradient(x, x, zeros([1, 2, 2, 2]));
        Assert.Equal(0, grad.abs().max().item<double>());
    }
}

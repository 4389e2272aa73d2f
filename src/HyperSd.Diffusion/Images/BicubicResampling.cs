using static TorchSharp.torch;

namespace HyperSd.Diffusion.Images;

/// <summary>
/// Pillow's <c>Image.resize(…, BICUBIC)</c>, the resize in transformers' (slow) image processors, as separable
/// resampling matrices: Keys' cubic with a = −0.5, its support widened by the downscale factor (antialiasing),
/// horizontal pass first, then vertical, each pass clipped to the pixel range (Pillow keeps 8-bit images between the
/// passes, so the cubic's overshoot at hard edges is cut before the second pass). The 8-bit path reproduces Pillow's
/// integer arithmetic exactly (fixed-point coefficients with 22 fractional bits, each pass rounded and clipped to
/// 0..255). The float path is PyTorch's <c>interpolate(mode="bicubic", antialias=True)</c> (ported from the same Pillow
/// code) applied one axis at a time with a clamp to [0, 1] after each: within about one 8-bit level of Pillow, and
/// differentiable. (A single 2-D torch call, which does not clip between the passes, can be several levels off at
/// hard edges.)
/// </summary>
public static class BicubicResampling
{
    /// <summary>Pillow's PRECISION_BITS for 8-bit images (32 − 8 − 2).</summary>
    const int PrecisionBits = 22;

    /// <summary>Keys' cubic convolution kernel with a = −0.5 (Pillow's bicubic_filter).</summary>
    public static double Filter(double x)
    {
        const double a = -0.5;
        x = Math.Abs(x);
        if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
        if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
        return 0;
    }

    /// <summary>The [outSize, inSize] resampling matrix of one axis (Pillow's precompute_coeffs): output pixel i is centred
    /// at (i + 0.5)·scale in input coordinates; its taps span ±2·max(scale, 1) around the centre, clipped to the image,
    /// and are normalised to sum to 1.</summary>
    public static double[,] Weights(int inSize, int outSize)
    {
        if (inSize <= 0 || outSize <= 0) throw new ArgumentException($"sizes must be positive, got {inSize} → {outSize}");
        double scale = (double)inSize / outSize, filterScale = Math.Max(scale, 1.0), support = 2.0 * filterScale;
        var weights = new double[outSize, inSize];
        for (int i = 0; i < outSize; i++)
        {
            double center = (i + 0.5) * scale;
            // (int) truncation as in C: Pillow's "round the value"
            int min = Math.Max((int)(center - support + 0.5), 0), max = Math.Min((int)(center + support + 0.5), inSize);
            double sum = 0;
            for (int x = min; x < max; x++) sum += weights[i, x] = Filter((x - center + 0.5) / filterScale);
            if (sum != 0)
                for (int x = min; x < max; x++) weights[i, x] /= sum;
        }
        return weights;
    }

    /// <summary>Resizes [..., H, W] images with values in [0, 1] to <paramref name="height"/> × <paramref name="width"/>.</summary>
    /// <param name="eightBit">True: as Pillow on an 8-bit image: the input is rounded to 0..255 and each pass is computed in
    /// fixed point and rounded back to 8 bits (no gradient). False: float passes clamped to [0, 1], differentiable.</param>
    public static Tensor Resize(Tensor images, int height, int width, bool eightBit)
    {
        using var scope = NewDisposeScope();
        long inHeight = images.shape[^2], inWidth = images.shape[^1];
        var x = eightBit ? images.clamp(0, 1).mul(255).round().to(ScalarType.Float64) : images;
        // Each pass only when its size changes, as Pillow does (a same-size pass is the identity anyway).
        if (width != inWidth) x = Pass(x, Matrix((int)inWidth, width, eightBit, x), eightBit, horizontal: true);
        if (height != inHeight) x = Pass(x, Matrix((int)inHeight, height, eightBit, x), eightBit, horizontal: false);
        var result = eightBit ? x.div(255).to(images.dtype) : ReferenceEquals(x, images) ? images.clone() : x;
        return result.MoveToOuterDisposeScope();
    }

    static Tensor Matrix(int inSize, int outSize, bool eightBit, Tensor like)
    {
        var w = Weights(inSize, outSize);
        var flat = new double[outSize * inSize];
        for (int i = 0; i < outSize; i++)
            for (int j = 0; j < inSize; j++)
                // normalize_coeffs_8bpc: round half away from zero to 22-bit fixed point
                flat[i * inSize + j] = eightBit ? Math.Round(w[i, j] * (1 << PrecisionBits), MidpointRounding.AwayFromZero) : w[i, j];
        return tensor(flat, [outSize, inSize], ScalarType.Float64, like.device).to(like.dtype);
    }

    static Tensor Pass(Tensor x, Tensor matrix, bool eightBit, bool horizontal)
    {
        var y = horizontal ? x.matmul(matrix.t()) : matrix.matmul(x);
        if (!eightBit) return y.clamp(0, 1);
        // Integer sums below 2^53 are exact in float64: Pillow's (ss + 2^21) >> 22, clipped to 0..255.
        return y.add(1 << (PrecisionBits - 1)).div(1 << PrecisionBits, RoundingMode.floor).clamp(0, 255);
    }
}

using HyperSd.Distillation.SegmentConsistency;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.SegmentConsistency;

public class SegmentScheduleTests
{
    [Theory]
    [InlineData(8, new[] { 0, 119, 239, 359, 499, 619, 739, 859 })]
    [InlineData(4, new[] { 0, 239, 499, 739 })]
    [InlineData(2, new[] { 0, 499 })]
    [InlineData(1, new[] { 0 })]
    public void End_timesteps_are_PCMs(int k, int[] ends)
    {
        var s = new SegmentSchedule(1000, 50, k);
        Assert.Equal(ends, s.EndTimesteps);
        Assert.Equal(20, s.StepSize);
        Assert.Equal(1000 / k, s.SegmentLength);
        Assert.Equal(19, s.Timesteps[0]);
        Assert.Equal(999, s.Timesteps[^1]);
        Assert.Equal(50, s.Timesteps.Count);
    }

    [Fact]
    public void Grid_indices_map_to_their_segment_end_and_boundary()
    {
        var s = new SegmentSchedule(1000, 50, 8);
        Assert.Equal([0, 6, 12, 18, 25, 31, 37, 43], s.BoundaryIndices);
        Assert.Equal(0, s.EndFor(0));
        Assert.Equal(0, s.EndFor(5));
        Assert.Equal(119, s.EndFor(6));
        Assert.Equal(859, s.EndFor(49));
        Assert.True(s.PrevIsOnBoundary(0));
        Assert.True(s.PrevIsOnBoundary(6));
        Assert.False(s.PrevIsOnBoundary(7));
        Assert.Equal(0, s.PrevTimestep(0));
        Assert.Equal(119, s.PrevTimestep(6));
        // on a boundary, t − s is exactly the segment end
        foreach (var b in s.BoundaryIndices) Assert.Equal(s.EndFor(b), s.PrevTimestep(b));

        using var idx = tensor(new long[] { 0, 5, 6, 7, 49 });
        using var ends = s.EndFor(idx);
        using var on = s.PrevIsOnBoundary(idx);
        Assert.Equal([0L, 0, 119, 119, 859], ends.data<long>().ToArray());
        Assert.Equal([true, false, true, false, false], on.data<bool>().ToArray());
    }

    [Fact]
    public void Other_grids_follow_the_same_rule()
    {
        var s = new SegmentSchedule(1000, 40, 4); // PCM's SDXL grid
        Assert.Equal(25, s.StepSize);
        Assert.Equal([0, 249, 499, 749], s.EndTimesteps);
    }

    [Fact]
    public void Bad_sizes_are_refused()
    {
        Assert.Contains("segments", Assert.Throws<ArgumentOutOfRangeException>(() => new SegmentSchedule(1000, 50, 51)).Message);
        Assert.Contains("solver steps", Assert.Throws<ArgumentOutOfRangeException>(() => new SegmentSchedule(1000, 0, 1)).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => new SegmentSchedule(1000, 50, 8).EndFor(50));
    }
}

using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace HyperSd.Migrations.Sqlite.Migrations
{
    /// <inheritdoc />
    public partial class ScheduleQueuedFiring : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.AddColumn<long>(
                name: "queued_firing_at",
                table: "schedules",
                type: "INTEGER",
                nullable: true);
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropColumn(
                name: "queued_firing_at",
                table: "schedules");
        }
    }
}

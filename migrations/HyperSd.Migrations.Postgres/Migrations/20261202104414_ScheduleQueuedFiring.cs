using System;
using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace HyperSd.Migrations.Postgres.Migrations
{
    /// <inheritdoc />
    public partial class ScheduleQueuedFiring : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.AddColumn<DateTimeOffset>(
                name: "queued_firing_at",
                table: "schedules",
                type: "timestamp with time zone",
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
